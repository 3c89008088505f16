"""Planted sessions: webcam recordings with known emotional segments, from real faces and voices.

Each session is one RAVDESS actor's voice and FER2013 faces on a webcam-like room:

* a **baseline**: the first ``baseline_s`` seconds, and every gap between planted segments,
  show FER2013 *neutral* faces while the actor says RAVDESS *neutral* or *calm* sentences with
  think-aloud pauses;
* **planted segments** of 5–25 s, in random order, one per kind (:data:`KINDS`): faces of the
  planted FER2013 class while the actor speaks the same RAVDESS emotion, back to back:
  ``frustration`` (anger, disgust or sadness), ``delight`` (happiness), ``surprise`` (surprise
  or fear).

Faces are FER2013 ``PublicTest`` photos (48×48 grey), upscaled smoothly (Lanczos) to the
session's face size, feathered onto the room of :mod:`pipelines.sample_media.build` and moved
by the same simulated camera; a new photo of the stretch's class appears with every sentence.
While the actor speaks, the photo's lower face is moved with the speech's loudness (a jaw drop
of up to :data:`JAW_DROP` of the face's height, the mouth's gap drawn dark), so the job's
speaking-face test sees a face that talks: a still photo would leave every sentence to
off-screen speech.  The motion is drawn, not filmed; the expression it moves is the photo's.
Only photos on which MTCNN (the job's detector, with its thresholds) finds the face are used:
a 48 px photo blown up fourfold is not always a detectable face.  Photos are *not* filtered by
what the emotion model says of them.  Voices keep their recorded loudness relative to the
actor's neutral sentences (one gain per session), so an angry sentence stays louder.

Every random choice comes from ``numpy.random.default_rng(seed)`` of the session; the truth
(segments, tasks, photos, sentences, seeds) is written to ``planted.json`` beside the files.
Each recording gets a sidecar ``<name>.tasks.csv`` (``uri,task,start_s,end_s``): the baseline
stretch as task ``baseline`` and the rest in two tasks.

What these sessions cannot show: the faces and voices are actors' posed expressions,
stronger and more prototypical than a participant's, and face and voice change in step at
segment edges; the face changes identity with each sentence.  Terms: FER2013 (research use,
no open licence) and RAVDESS (CC BY-NC-SA 4.0), see ``../shared/data/README.md``.

Usage: ``python -m pipelines.sample_media.planted OUT_DIR [--sessions 20] [--seed 1700]
[--data ../shared/data]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from infra.logs import setup_logging
from operators.io.files import make_local_atomic
from pipelines.sample_media.build import (
    _AUDIO_CODEC,
    _FFMPEG,
    _REPRODUCIBLE,
    _VIDEO_CODEC,
    SAMPLE_RATE,
    _camera,
    _cutout,
    _ffmpeg,
    _noise,
    _require,
    _room,
    _run,
    _write_atomically,
    wav_bytes,
)

logger = logging.getLogger(__name__)

KINDS: dict[str, tuple[str, ...]] = {
    "frustration": ("angry", "disgust", "sad"),
    "delight": ("happy",),
    "surprise": ("surprise", "fear"),
}
"""Planted kind → the expressions that can stand for it (``operators.schema.EMOTIONS`` names)."""

FER_LABEL = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5,
             "neutral": 6}
"""FER2013's label ids."""
RAVDESS_CODE = {"neutral": "01", "calm": "02", "happy": "03", "sad": "04", "angry": "05",
                "fear": "06", "disgust": "07", "surprise": "08"}
"""RAVDESS file-name emotion codes (third field)."""

FPS = 10
"""Frame rate of the planted recordings: a low-light webcam's; the job samples 5 fps."""
SIZE = (640, 480)
DEFAULT_SEED = 1700
SEGMENT_S = (5.0, 25.0)
GAP_S = (8.0, 14.0)
BASELINE_S = 20.0
TAIL_S = 8.0
NEUTRAL_PAUSE_S = (0.8, 2.5)
"""Silence between think-aloud sentences in neutral stretches."""
PLANTED_PAUSE_S = (0.2, 0.6)
SPEECH_RMS_DBFS = -26.0
"""RMS of the actor's neutral sentences after the session gain; other emotions keep their
recorded level relative to it."""
PHOTO_CHECKS = 3
"""Photos per stretch class tried before giving up on finding a detectable one."""
JAW_DROP = 0.05
"""Largest jaw drop of a talking photo, as a fraction of the face's height."""
LIP_LINE = 0.68
"""Where the lips meet in a FER2013 cutout, as a fraction of its height (the mouth sits at
~75 % of the 48 px photo, which the cutout pads by 6 px above and 8 px below)."""
OPEN_DB = (-40.0, -24.0)
"""Speech loudness (dBFS per video frame) mapped to a closed (0) and fully open (1) mouth."""


@dataclass(frozen=True)
class Segment:
    """A planted segment: its kind (a :data:`KINDS` key), the expression, clip seconds."""

    kind: str
    emotion: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Session:
    """One planted recording's plan and truth."""

    name: str
    seed: int
    actor: int
    duration_s: float
    face_px: int
    segments: tuple[Segment, ...]
    tasks: tuple[tuple[str, float, float], ...]
    photos: tuple[tuple[float, int], ...] = field(default=())  # (from s, FER2013 row)
    sentences: tuple[tuple[float, str], ...] = field(default=())  # (at s, RAVDESS file)

    @property
    def neutral_s(self) -> float:
        return self.duration_s - sum(s.end_s - s.start_s for s in self.segments)


def plan_session(name: str, seed: int, actor: int, *, baseline_s: float = BASELINE_S,
                 segment_s: tuple[float, float] = SEGMENT_S,
                 gap_s: tuple[float, float] = GAP_S, tail_s: float = TAIL_S,
                 kinds: tuple[str, ...] = tuple(KINDS)) -> Session:
    """The layout of a session: baseline, then each of ``kinds`` once in random order with
    neutral gaps, then a neutral tail.  Times are rounded to 0.5 s."""
    rng = np.random.default_rng(seed)
    t = baseline_s
    segments = []
    for i, k in enumerate(rng.permutation(len(kinds))):
        kind = kinds[int(k)]
        if i:
            t += round(float(rng.uniform(*gap_s)) * 2) / 2
        length = round(float(rng.uniform(*segment_s)) * 2) / 2
        emotion = KINDS[kind][int(rng.integers(len(KINDS[kind])))]
        segments.append(Segment(kind, emotion, t, t + length))
        t += length
    duration = t + tail_s
    middle = round(segments[len(segments) // 2].start_s - 1.0, 1)
    tasks = (("baseline", 0.0, baseline_s), ("search", baseline_s, middle),
             ("checkout", middle, duration))
    face_px = int(rng.integers(200, 261))
    return Session(name, seed, actor, duration, face_px, tuple(segments), tasks)


# --- sources --------------------------------------------------------------------------------

class FerPhotos:
    """FER2013 PublicTest photos by class, with the MTCNN detectability check."""

    def __init__(self, data: Path):
        self.rows: dict[int, np.ndarray] = {}
        by_label: dict[int, list[int]] = {}
        with gzip.open(data / "fer2013.csv.gz", "rt") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                if row["Usage"] != "PublicTest":
                    continue
                self.rows[i] = np.array(row["pixels"].split(), np.uint8).reshape(48, 48)
                by_label.setdefault(int(row["emotion"]), []).append(i)
        self.by_label = by_label
        self._detectable: dict[int, bool] = {}
        self._mtcnn = None
        self._room: Image.Image | None = None
        self._face: tuple = (None, None, None)  # (row, face_px, resized cutout)

    def cutout(self, row: int) -> Image.Image:
        """The photo in colour (grey), feathered at the edges like a face cut from a frame."""
        photo = Image.fromarray(self.rows[row]).convert("RGB")
        return _cutout(photo, [(-4, -6, 52, 56)], 2)

    def picture(self, row: int, face_px: int, opening: float = 0.0) -> Image.Image:
        """The room with photo ``row`` as the participant's face, ``face_px`` tall, its mouth
        ``opening`` (0 closed … 1 a full :data:`JAW_DROP`) open."""
        if self._room is None:
            self._room = _room(SIZE)
        if self._face[:2] != (row, face_px):
            self._face = (row, face_px, self.cutout(row).resize((face_px, face_px),
                                                                 Image.Resampling.LANCZOS))
        face = _open_mouth(self._face[2], opening)
        img = self._room.copy()
        img.paste(face, (SIZE[0] // 2 - face_px // 2, round(SIZE[1] * 0.45) - face_px // 2), face)
        return img

    def detectable(self, row: int, face_px: int) -> bool:
        """Whether MTCNN, with the job's default thresholds, finds the face in the picture."""
        if row not in self._detectable:
            if self._mtcnn is None:
                from facenet_pytorch import MTCNN

                from operators.vision.detect_faces import FaceDetectorConfig
                config = FaceDetectorConfig()
                self._min_score = config.min_score
                self._mtcnn = MTCNN(keep_all=True, min_face_size=config.min_face_size,
                                    thresholds=list(config.thresholds), post_process=False)
            boxes, scores = self._mtcnn.detect(np.asarray(self.picture(row, face_px)))
            self._detectable[row] = boxes is not None and float(np.max(scores)) >= self._min_score
        return self._detectable[row]

    def draw(self, emotion: str, rng: np.random.Generator, face_px: int) -> int:
        """A random detectable photo of ``emotion``."""
        pool = self.by_label[FER_LABEL[emotion]]
        for _ in range(PHOTO_CHECKS * 20):
            row = pool[int(rng.integers(len(pool)))]
            if self.detectable(row, face_px):
                return row
        raise RuntimeError(f"no detectable FER2013 {emotion} photo found in "
                           f"{PHOTO_CHECKS * 20} draws")


class RavdessVoices:
    """One actor's RAVDESS sentences, decoded to float32 at the recordings' rate and trimmed
    to their audible part."""

    def __init__(self, data: Path, actor: int):
        self.folder = data / "ravdess_speech_16k" / f"Actor_{actor:02d}"
        if not self.folder.is_dir():
            raise FileNotFoundError(f"RAVDESS actor folder {self.folder} is missing")
        self._cache: dict[str, np.ndarray] = {}

    def files(self, emotion: str) -> list[str]:
        codes = ("01", "02") if emotion == "neutral" else (RAVDESS_CODE[emotion],)
        return sorted(p.name for p in self.folder.glob("03-01-*.flac")
                      if p.name.split("-")[2] in codes)

    def sentence(self, name: str) -> np.ndarray:
        if name not in self._cache:
            raw = _run([*_FFMPEG, "-i", str(self.folder / name), "-f", "s16le", "-ac", "1",
                        "-ar", str(SAMPLE_RATE), "pipe:1"])
            audio = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
            # audible part: 10 ms frames within 35 dB of the loudest one
            frames = audio[: len(audio) // 480 * 480].reshape(-1, 480)
            level = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
            loud = np.flatnonzero(level > level.max() * 10 ** (-35 / 20))
            self._cache[name] = audio[loud[0] * 480: (loud[-1] + 1) * 480]
        return self._cache[name]

    def neutral_gain(self) -> float:
        """One gain for the whole session: the neutral sentences' RMS to SPEECH_RMS_DBFS."""
        rms = np.median([np.sqrt(np.mean(self.sentence(n) ** 2))
                         for n in self.files("neutral")])
        return float(10 ** (SPEECH_RMS_DBFS / 20) / rms)


def _open_mouth(face: Image.Image, opening: float) -> Image.Image:
    """``face`` (RGBA) with everything below the lip line moved down by ``opening`` ×
    :data:`JAW_DROP` of its height; the gap is the lip row, darkened across the mouth."""
    arr = np.asarray(face)
    h, w = arr.shape[:2]
    drop = round(float(np.clip(opening, 0.0, 1.0)) * JAW_DROP * h)
    if drop == 0:
        return face
    lip = round(LIP_LINE * h)
    out = arr.copy()
    out[lip + drop:] = arr[lip: h - drop]
    gap = np.repeat(arr[lip: lip + 1], drop, axis=0).astype(np.float32)
    mouth = slice(round(0.32 * w), round(0.68 * w))
    gap[:, mouth, :3] *= 0.3
    out[lip: lip + drop] = gap.astype(np.uint8)
    return Image.fromarray(out, "RGBA")


# --- one session ----------------------------------------------------------------------------

def _stretches(session: Session) -> list[tuple[str, float, float]]:
    """(expression, start, end) covering the session: neutral between planted segments."""
    out, t = [], 0.0
    for seg in session.segments:
        out.append(("neutral", t, seg.start_s))
        out.append((seg.emotion, seg.start_s, seg.end_s))
        t = seg.end_s
    out.append(("neutral", t, session.duration_s))
    return out


def _fill(session: Session, photos: FerPhotos, voices: RavdessVoices,
          rng: np.random.Generator) -> Session:
    """Choose each stretch's sentences and photos (a new photo with every sentence)."""
    sentences: list[tuple[float, str]] = []
    shown: list[tuple[float, int]] = []
    for emotion, start, end in _stretches(session):
        neutral = emotion == "neutral"
        pause = NEUTRAL_PAUSE_S if neutral else PLANTED_PAUSE_S
        files = voices.files(emotion)
        t = start + (float(rng.uniform(*pause)) if neutral else 0.0)
        shown.append((start, photos.draw(emotion, rng, session.face_px)))
        while t < end - 0.5:
            name = files[int(rng.integers(len(files)))]
            sentences.append((round(t, 3), name))
            if t > start:
                shown.append((round(t, 3), photos.draw(emotion, rng, session.face_px)))
            t += len(voices.sentence(name)) / SAMPLE_RATE + float(rng.uniform(*pause))
    return Session(**{**asdict(session), "segments": session.segments,
                      "photos": tuple(shown), "sentences": tuple(sentences)})


def _speech(session: Session, voices: RavdessVoices) -> np.ndarray:
    """The session's speech alone (float32 at SAMPLE_RATE): each sentence at its time, cut
    (with a 20 ms fade) where its stretch ends so no emotion leaks into the next stretch."""
    n = round(session.duration_s * SAMPLE_RATE)
    track = np.zeros(n, np.float32)
    gain = voices.neutral_gain()
    ends = sorted({e for _, _, e in _stretches(session)})
    fade = np.linspace(1.0, 0.0, SAMPLE_RATE // 50, dtype=np.float32)
    for at, name in session.sentences:
        stretch_end = min(e for e in ends if e > at)
        audio = voices.sentence(name) * gain
        length = min(len(audio), round((stretch_end - at) * SAMPLE_RATE))
        clip = audio[:length].copy()
        if length < len(audio):
            clip[-len(fade):] *= fade[-length:] if length < len(fade) else fade
        start = round(at * SAMPLE_RATE)
        track[start: start + len(clip)] += clip[: n - start]
    return track


def _openings(speech: np.ndarray) -> np.ndarray:
    """(video frames,) mouth opening in [0, 1] per frame: the speech's RMS over the frame,
    from :data:`OPEN_DB`'s closed level to its open one."""
    per = SAMPLE_RATE // FPS
    frames = np.pad(speech, (0, -len(speech) % per)).reshape(-1, per)
    level = 20 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-9)
    return np.clip((level - OPEN_DB[0]) / (OPEN_DB[1] - OPEN_DB[0]), 0.0, 1.0)


def _encode(session: Session, photos: FerPhotos, voices: RavdessVoices, path: Path) -> None:
    times = [t for t, _ in session.photos]
    speech = _speech(session, voices)
    openings = _openings(speech)

    def frame(i: int) -> bytes:
        t = i / FPS
        row = session.photos[int(np.searchsorted(times, t, side="right")) - 1][1]
        # openings has ceil(duration × FPS) frames, the video round(duration × FPS)
        return _camera(photos.picture(row, session.face_px, openings[i]), t).tobytes()

    wav = path.with_name(path.name + ".wav")
    wav.write_bytes(wav_bytes(_noise(len(speech), session.seed) + speech))  # room noise
    try:
        frames = (frame(i) for i in range(round(session.duration_s * FPS)))
        _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{SIZE[0]}x{SIZE[1]}",
                 "-framerate", str(FPS), "-i", "pipe:0", "-i", str(wav), *_VIDEO_CODEC,
                 "-g", str(2 * FPS), *_AUDIO_CODEC, *_REPRODUCIBLE,
                 "-t", f"{session.duration_s}", "-movflags", "+faststart", "-f", "mp4",
                 str(path)], frames=frames)
    finally:
        wav.unlink(missing_ok=True)


def tasks_csv(session: Session, uri: str) -> str:
    """The session's task markers as a ``--tasks``/sidecar CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["uri", "task", "start_s", "end_s"])
    for task, start, end in session.tasks:
        writer.writerow([uri, task, start, end])
    return out.getvalue()


def make_planted_sessions(out_dir: str | Path, sessions: int = 20, *, seed: int = DEFAULT_SEED,
                          data: str | Path = Path("../shared/data"),
                          plan: dict | None = None) -> list[Session]:
    """Write ``sessions`` planted recordings ``planted_NN.mp4`` (session NN has seed
    ``seed + NN`` and RAVDESS actor ``NN % 20 + 1``), their sidecar task files and
    ``planted.json`` (the truth) into ``out_dir``.  ``plan``: keyword arguments of
    :func:`plan_session` (e.g. shorter segments for tests).  A recording already there with
    the same plan is kept.  Raises ``FileNotFoundError`` when the data are missing."""
    _require("ffmpeg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data)
    truth_path = out / "planted.json"
    known = {}
    if truth_path.is_file():
        known = {s["name"]: s for s in json.loads(truth_path.read_text())["sessions"]}
    photos = FerPhotos(data)
    written: list[Session] = []
    started = time.perf_counter()
    for i in range(sessions):
        name = f"planted_{i:02d}"
        session = plan_session(name, seed + i, i % 20 + 1, **(plan or {}))
        path = out / f"{name}.mp4"
        old = known.get(name)
        if old and path.is_file() and _same_plan(old, session):
            written.append(_from_json(old))
            continue
        rng = np.random.default_rng([seed + i, 1])
        voices = RavdessVoices(data, session.actor)
        session = _fill(session, photos, voices, rng)
        t0 = time.perf_counter()
        make_local_atomic(path, lambda target, s=session, v=voices: _encode(s, photos, v, target))
        _write_atomically(out / f"{name}.tasks.csv", tasks_csv(session, path.name))
        logger.info("%s: %.0f s session (actor %02d, seed %d) built in %.1f s", path,
                    session.duration_s, session.actor, session.seed, time.perf_counter() - t0)
        written.append(session)
        known[name] = asdict(session)
        _write_atomically(truth_path, json.dumps(
            {"seed": seed, "sessions": [known[k] for k in sorted(known)]}, indent=1))
    logger.info("%d planted session(s) in %s (%.1f s)", len(written), out.resolve(),
                time.perf_counter() - started)
    return written


def _same_plan(recorded: dict, session: Session) -> bool:
    plan = {k: v for k, v in asdict(session).items() if k not in ("photos", "sentences")}
    mine = json.loads(json.dumps(plan))
    return all(recorded.get(k) == v for k, v in mine.items())


def _from_json(entry: dict) -> Session:
    return Session(**{**entry,
                      "segments": tuple(Segment(**s) for s in entry["segments"]),
                      "tasks": tuple(tuple(t) for t in entry["tasks"]),
                      "photos": tuple(tuple(p) for p in entry["photos"]),
                      "sentences": tuple(tuple(s) for s in entry["sentences"])})


def load_truth(out_dir: str | Path) -> list[Session]:
    """The sessions recorded in ``out_dir/planted.json``."""
    entries = json.loads((Path(out_dir) / "planted.json").read_text())["sessions"]
    return [_from_json(e) for e in entries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.sample_media.planted",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    setup_logging()
    make_planted_sessions(args.out_dir, args.sessions, seed=args.seed, data=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
