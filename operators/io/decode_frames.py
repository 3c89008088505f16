"""Decode: sampled frames (decord) and 16 kHz mono audio (ffmpeg) in bounded time chunks."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import decord
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from operators import schema as S
from operators.audio.extract_audio import SAMPLE_RATE, AudioDecodeError, AudioStream
from operators.io.files import is_remote

logger = logging.getLogger(__name__)


class DecodeConfig(BaseModel):
    """How recordings are sampled.  ``window_s``/``hop_s`` are the timeline's analysis grid:
    chunks are whole numbers of hops so no window straddles two owners."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # 5 fps sees every facial expression that lasts 200 ms+ at a sixth of the cost of 30 fps.
    sample_fps: float = Field(5.0, gt=0)
    # Longest side after resizing: a webcam face stays >100 px, enough for 64 px emotion crops.
    max_side: int = Field(640, ge=64)
    # 10 s × 5 fps × 640×480×3 ≈ 46 MB per chunk row: large enough to batch the detector,
    # small enough that a one-hour recording never sits in memory.
    chunk_s: float = Field(10.0, gt=0)
    window_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)
    # decord threads per decoder; Ray already runs one decoder per CPU.
    num_threads: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _chunk_is_whole_hops(self) -> DecodeConfig:
        hops = self.chunk_s / self.hop_s
        if abs(hops - round(hops)) > 1e-9:
            raise ValueError(f"chunk_s ({self.chunk_s}) must be a multiple of hop_s ({self.hop_s})")
        if self.window_s < self.hop_s:
            raise ValueError("window_s must be >= hop_s (windows would leave gaps)")
        return self


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Downscale (never upscale) so the longer side is at most ``max_side``; even sizes."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sample_indices(frame_starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time: the last frame starting at or before it.

    Uses the real per-frame timestamps, so variable-frame-rate files are sampled correctly.
    """
    idx = np.searchsorted(frame_starts, times + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(frame_starts) - 1)


# decord cannot deliver frames narrower than 32 px (its row-alignment check fails), and the
# face detector needs frames at least as large as its smallest face (40 px by default).  A
# picture with a side under this is decoded stretched up to it: such a picture cannot show a
# face, and this way its audio still gets a timeline (status no_face, with a note saying why).
_MIN_SIDE = 64


class _AudioWindows:
    """Serve audio spans in increasing time order from one ffmpeg stream."""

    def __init__(self, stream: AudioStream):
        self._stream = stream
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index of self._buffer[0]

    def span(self, start_s: float, end_s: float) -> np.ndarray:
        start, end = round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE)
        while self._buffer_start + len(self._buffer) < end:
            more = self._stream.read(end - self._buffer_start - len(self._buffer))
            if not len(more):
                break
            self._buffer = np.concatenate([self._buffer, more])
        out = self._buffer[max(0, start - self._buffer_start): end - self._buffer_start].copy()
        drop = max(0, start - self._buffer_start)
        self._buffer, self._buffer_start = self._buffer[drop:], self._buffer_start + drop
        return out


def _chunk_row(row: dict[str, Any], index: int, start: float, end: float,
               n_chunks: int = 1) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != S.LOCAL_PATH}
    out.update({S.CHUNK_INDEX: index, S.N_CHUNKS: n_chunks, S.CHUNK_START_S: start,
                S.CHUNK_END_S: end})
    return out


def _empty_media(row: dict[str, Any]) -> dict[str, Any]:
    row.update({
        S.FRAMES: np.zeros((0, 2, 2, 3), np.uint8),
        S.FRAME_TS: np.zeros(0, np.float64),
        S.FRAME_WIDTH: 0,
        S.FRAME_HEIGHT: 0,
        S.AUDIO: np.zeros(0, np.float32),
        S.AUDIO_START_S: 0.0,
    })
    return row


def make_decode_fn(config: DecodeConfig) -> Callable[[dict[str, Any]], Iterator[dict[str, Any]]]:
    """Flat-map function (``Dataset.flat_map``): one clip row in, chunk rows out.

    Reads ``LOCAL_PATH``, ``URI``, ``STATUS`` and the media facts.  Emits one row per
    ``chunk_s`` of the clip with ``FRAMES`` (uint8 n×H×W×3 RGB at the working size, rotation
    applied), ``FRAME_TS``, ``FRAME_WIDTH``/``FRAME_HEIGHT``, ``AUDIO`` (16 kHz mono float32 from
    ``AUDIO_START_S`` = chunk start, covering the chunk plus ``window_s - hop_s`` so the last
    windows are complete; empty without an audio stream), ``CHUNK_*`` and ``N_CHUNKS`` (so
    a chunk lost later to repeated worker failures is noticed).  Only one chunk is
    in memory at a time.

    Failure behaviour: a clip that already failed (staging/probe) becomes one row with its
    status and no media.  A decode error before any frame ends the clip with
    ``decode_error``; one after some frames ends it with ``partial``: the frames before the
    fault are kept (the faulty chunk is cut at the first sample that could not be decoded,
    and the message names that time).  A broken audio stream marks the chunk ``partial`` and
    the rest of the clip is decoded without audio.  A picture with a side under 64 px is
    decoded stretched to 64 px and noted in ``ERROR`` (it cannot show a face).  Staged copies
    of remote inputs are deleted when the clip is done.  Resources: 1 CPU (decord + one
    ffmpeg process).
    """

    def decode(row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        local = Path(row[S.LOCAL_PATH]) if row[S.LOCAL_PATH] else None
        try:
            if row[S.STATUS]:
                yield _empty_media(_chunk_row(row, 0, 0.0, 0.0))
                return
            yield from _decode_chunks(row, local, config)
        finally:
            if local is not None and is_remote(row[S.URI]):
                local.unlink(missing_ok=True)

    return decode


def _decode_chunks(
    row: dict[str, Any], path: Path, config: DecodeConfig
) -> Iterator[dict[str, Any]]:
    started = time.perf_counter()
    duration = float(row[S.DURATION_S])
    # decord's CPU reader (the one used here) turns frames upright itself, from the same
    # display matrix / rotate tag the probe reports as ROTATION, and scales after turning: so
    # it is asked for the displayed size, and the frames must not be turned again (turning
    # them again laid a phone video's face on its side, squashed, and no face was found).
    disp_w, disp_h = int(row[S.WIDTH]), int(row[S.HEIGHT])
    width, height = working_size(disp_w, disp_h, config.max_side)
    note = ""
    if min(width, height) < _MIN_SIDE:
        width, height = max(width, _MIN_SIDE), max(height, _MIN_SIDE)
        note = (f"picture is {disp_w}×{disp_h} px, too small to show a face "
                f"(decoded stretched to {width}×{height})")
    with contextlib.ExitStack() as stack:
        try:
            video, reader = _open_video(path, str(row[S.CONTAINER]), width, height, config,
                                        stack)
            frame_starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
        except decord.DECORDError as exc:
            failed = _empty_media(_chunk_row(row, 0, 0.0, 0.0))
            failed[S.STATUS] = S.Status.DECODE_ERROR.value
            # without the local (possibly staged temporary) path decord puts in brackets
            reason = _first_line(exc).replace(f"[{path}] ", "")
            failed[S.ERROR] = f"decoder could not open the video stream: {reason}"
            failed[S.STAGE_SECONDS] += time.perf_counter() - started
            yield failed
            return

        n_chunks = max(1, math.ceil(duration / config.chunk_s - 1e-9))
        overlap = config.window_s - config.hop_s
        windows = None
        if row[S.HAS_AUDIO]:
            windows = _AudioWindows(stack.enter_context(AudioStream(path)))
        for index in range(n_chunks):
            start = index * config.chunk_s
            end = min(duration, start + config.chunk_s)
            chunk = _chunk_row(row, index, start, end, n_chunks)
            chunk[S.STAGE_SECONDS] = 0.0 if index else row[S.STAGE_SECONDS]
            if note and not index:
                chunk[S.ERROR] = note
            times = np.arange(math.ceil(start * config.sample_fps - 1e-9),
                              math.ceil(end * config.sample_fps - 1e-9)) / config.sample_fps
            indices = sample_indices(frame_starts, times)
            fault = reason = None
            try:
                frames = reader.get_batch(indices).asnumpy()
            except decord.DECORDError as exc:
                # A damaged stretch of the stream: keep the frames before it.
                reason = _first_line(exc)
                frames, reader = _frames_before_fault(video, width, height, config, indices)
            if reason is not None and len(frames) < len(indices):
                fault_s = float(times[len(frames)])
                fault = f"video decoding failed at {fault_s:.1f}s: {reason}"
                if not len(frames):
                    status = S.Status.PARTIAL if index else S.Status.DECODE_ERROR
                    failed = _empty_media(chunk)
                    failed[S.STATUS] = status.value
                    failed[S.ERROR] = fault
                    failed[S.STAGE_SECONDS] += time.perf_counter() - started
                    yield failed
                    return
                # The chunk now ends at the first sample that could not be decoded, so the
                # timeline's windows stop there too; the clip ends after this chunk.
                times, end = times[:len(frames)], fault_s
                chunk[S.CHUNK_END_S] = end
                chunk[S.STATUS] = S.Status.PARTIAL.value
                chunk[S.ERROR] = "; ".join(e for e in (chunk[S.ERROR], fault) if e)
            chunk[S.FRAMES] = frames
            chunk[S.FRAME_TS] = times.astype(np.float64)
            chunk[S.FRAME_HEIGHT], chunk[S.FRAME_WIDTH] = int(frames.shape[1]), int(frames.shape[2])
            chunk[S.AUDIO_START_S] = start
            chunk[S.AUDIO] = np.zeros(0, np.float32)
            if windows is not None:
                try:
                    chunk[S.AUDIO] = windows.span(start, min(duration, end + overlap))
                except AudioDecodeError as exc:
                    chunk[S.STATUS] = S.Status.PARTIAL.value
                    audio_fault = f"audio decoding failed at {start:.1f}s: {_first_line(exc)}"
                    chunk[S.ERROR] = "; ".join(e for e in (chunk[S.ERROR], audio_fault) if e)
                    chunk[S.HAS_AUDIO] = False
                    windows = None
            chunk[S.STAGE_SECONDS] += time.perf_counter() - started
            yield chunk
            if fault is not None:
                return
            started = time.perf_counter()


def _open_video(path: Path, container: str, width: int, height: int, config: DecodeConfig,
                stack: contextlib.ExitStack) -> tuple[Path, decord.VideoReader]:
    """decord's reader on the clip's video stream, and the file it reads.

    decord cannot open a Matroska/WebM file without a duration in its header (what a
    browser's MediaRecorder streams, once larger than ffprobe's 5 MB probe): such a file's
    video stream is first copied (no re-encoding, timestamps kept) into a temporary Matroska
    file, which has one; the copy is deleted when ``stack`` closes, i.e. with the clip.
    """
    def open_reader(video: Path) -> decord.VideoReader:
        return decord.VideoReader(str(video), width=width, height=height,
                                  num_threads=config.num_threads)

    try:
        return path, open_reader(path)
    except decord.DECORDError:
        if "matroska" not in container:
            raise
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emoray-remux-")))
        remuxed = scratch / "video.mkv"
        copied = subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
             "-map", "0:v:0", "-c", "copy", "-f", "matroska", str(remuxed)],
            capture_output=True, check=False)
        if copied.returncode:
            raise  # the remux failed too: decord's reason is the clip's message
    logger.info("%s: no duration in its header; decoding a remuxed copy", path.name)
    return remuxed, open_reader(remuxed)


def _frames_before_fault(path: Path, width: int, height: int, config: DecodeConfig,
                         indices: np.ndarray) -> tuple[np.ndarray, Any]:
    """The frames at ``indices`` up to the first one that cannot be decoded (n×H×W×3), and
    the reader that decoded them (the one to go on with if all of them could be decoded).

    decord's decoder thread is dead after a fault, so a fresh reader steps through the samples
    one at a time; this runs only for the chunk that holds the fault.
    """
    frames, reader = [], None
    try:
        reader = decord.VideoReader(str(path), width=width, height=height,
                                    num_threads=config.num_threads)
        for index in indices:
            frames.append(reader.get_batch([int(index)]).asnumpy()[0])
    except decord.DECORDError:
        pass  # the fault: what was decoded before it is the answer
    if not frames:
        return np.zeros((0, height, width, 3), np.uint8), reader
    return np.stack(frames), reader


# decord prefixes each message with "[hh:mm:ss] /its/source.cc:123: "; the reason follows.
_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")
# decord's words for a packet the codec refused, with ffmpeg's error code.
_REFUSED_PACKET = re.compile(r"avcodec_send_packet\(.*\(([-\d]+) vs\. 0\)")
_AVERRORS = {-1094995529: "invalid data", -11: "decoder not ready (EAGAIN)"}


def _first_line(exc: Exception) -> str:
    text = _DECORD_PREFIX.sub("", str(exc)).strip().splitlines()
    if not text:
        return type(exc).__name__
    refused = _REFUSED_PACKET.search(text[0])
    if refused:
        code = int(refused.group(1))
        return f"the video codec refused a packet ({_AVERRORS.get(code, f'ffmpeg error {code}')})"
    return text[0][:300]
