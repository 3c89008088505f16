"""Probe: media facts of each input, and the verdict whether it can be decoded at all."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import ffmpeg

from operators import schema as S
from operators.step import Grain, Step

logger = logging.getLogger(__name__)


class ProbeError(Exception):
    """The input cannot be processed; carries the clip's terminal status and message."""

    def __init__(self, status: S.Status, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _stderr_tail(exc: ffmpeg.Error, path: Path, lines: int = 2) -> str:
    """ffprobe's last words, without the local (possibly staged temporary) path and without
    the demuxer's memory address ("[mov,mp4,… @ 0x55…]"), so one file always gets one message."""
    text = (exc.stderr or b"").decode("utf-8", "replace").replace(f"{path}: ", "")
    text = re.sub(r" @ 0x[0-9a-f]+\]", "]", text)
    kept = text.strip().splitlines()[-lines:]
    return " | ".join(kept) if kept else "no diagnostic from ffprobe"


def _looks_like_text(path: Path) -> bool:
    head = path.read_bytes()[:4096] if path.stat().st_size else b""
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    return printable >= 0.95 * max(len(decoded), 1)


def _rotation_cw(stream: dict[str, Any]) -> int:
    """Degrees clockwise to turn stored frames for display.

    Newer ffmpeg reports a display matrix (counter-clockwise degrees, e.g. -90 for a phone
    held upright); older files carry a ``rotate`` tag (clockwise degrees).
    """
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return round(-float(side["rotation"])) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(tag) % 360 if tag else 0


def _fraction(text: str | None) -> float | None:
    if not text or text in ("0/0", "N/A"):
        return None
    num, _, den = text.partition("/")
    value = float(num) / float(den or 1)
    return value or None


def _duration_from_packets(path: Path, stream: dict[str, Any]) -> float:
    """End of the video stream read off its packets' timestamps (0.0 if there are none).

    For files whose header has no duration: a webm streamed by a browser's MediaRecorder (the
    usual way web-based usability tools record) or a live-written mkv.  Demuxes only, no
    decoding (0.6 s for a cached 30-minute, 1 GB webm).
    """
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", str(stream.get("index", "v:0")),
         "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=False)
    end = 0.0
    for line in result.stdout.splitlines():
        pts, _, length = line.partition(",")
        try:
            end = max(end, float(pts) + float(length.strip(",") or 0.0))
        except ValueError:
            continue  # N/A fields: a packet without a timestamp
    start = _float(stream.get("start_time")) or 0.0
    return max(0.0, end - start)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "N/A") else None
    except ValueError:
        return None


def probe_media(path: Path) -> dict[str, Any]:
    """ffprobe ``path`` and return the clip's media facts (the ``S.*`` media columns; sizes and
    rotation as floats, like the placeholders of unknown facts).

    Raises :class:`ProbeError` with ``empty_file``, ``not_video`` or ``decode_error``.
    """
    if path.stat().st_size == 0:
        raise ProbeError(S.Status.EMPTY_FILE, "file is empty (0 bytes)")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        if _looks_like_text(path):
            raise ProbeError(S.Status.NOT_VIDEO, "file is text, not a video") from exc
        raise ProbeError(
            S.Status.DECODE_ERROR, f"unreadable container: {_stderr_tail(exc, path)}"
        ) from exc
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    fmt = info.get("format", {})
    if not video:
        kinds = ", ".join(f"{s.get('codec_type')}:{s.get('codec_name')}" for s in streams)
        raise ProbeError(S.Status.NOT_VIDEO, f"no video stream (streams: {kinds or 'none'})")
    v = video[0]
    duration = _float(fmt.get("duration")) or _float(v.get("duration")) or 0.0
    if duration <= 0:
        # No duration in the header (a streamed webm/mkv): the packets still have timestamps.
        duration = _duration_from_packets(path, v)
    if duration <= 0:
        raise ProbeError(S.Status.DECODE_ERROR, "video stream has no duration")
    rotation = _rotation_cw(v)
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise ProbeError(S.Status.DECODE_ERROR, "video stream has no frame size")
    if rotation in (90, 270):
        width, height = height, width
    return {
        S.CONTAINER: fmt.get("format_name") or "",
        S.VIDEO_CODEC: v.get("codec_name") or "",
        S.DURATION_S: duration,
        S.FPS: (_fraction(v.get("avg_frame_rate")) or _fraction(v.get("r_frame_rate"))
                or float("nan")),
        S.WIDTH: float(width),
        S.HEIGHT: float(height),
        S.ROTATION: float(rotation),
        S.HAS_AUDIO: bool(audio),
    }


# Unknown facts are typed placeholders (NaN, "", False) so every block has one Arrow schema;
# the writer turns them into nulls for clips whose probe failed.
UNKNOWN_MEDIA: dict[str, Any] = {
    S.CONTAINER: "", S.VIDEO_CODEC: "", S.DURATION_S: float("nan"), S.FPS: float("nan"),
    S.WIDTH: float("nan"), S.HEIGHT: float("nan"), S.ROTATION: float("nan"), S.HAS_AUDIO: False,
}


class ProbeMedia(Step):
    """Add the media facts of each input, and the verdict whether it can be decoded at all.

    Reads ``LOCAL_PATH``, ``STATUS``; writes the media columns (``DURATION_S``, ``FPS``,
    ``WIDTH``/``HEIGHT`` as displayed, ``ROTATION``, ``HAS_AUDIO``, ``CONTAINER``,
    ``VIDEO_CODEC``; NaN/"" when unknown), and on failure ``STATUS`` (``empty_file``,
    ``not_video``, ``decode_error``) with a specific ``ERROR``.  Rows that already failed
    pass through.  One ffprobe process; the decoder's resources (fused with it).
    """

    name = "probe"
    grain = Grain.ROW
    reads = (S.LOCAL_PATH, S.URI, S.STATUS, S.ERROR)
    writes = (*UNKNOWN_MEDIA, S.STATUS, S.ERROR)

    def process(self, row: dict[str, Any]) -> dict[str, Any]:
        row.update(UNKNOWN_MEDIA)
        if not row[S.STATUS]:
            try:
                row.update(probe_media(Path(row[S.LOCAL_PATH])))
            except ProbeError as failure:
                row[S.STATUS], row[S.ERROR] = failure.status.value, failure.message
                logger.warning("%s: %s: %s", row[S.URI], failure.status.value, failure.message)
        return row
