"""Decode: sampled frames (decord, or PyAV) and 16 kHz mono audio (ffmpeg) in bounded chunks.

Both stream: decord decodes one chunk's frames at a time and is stopped after each chunk
(see :class:`FrameSampler`), and one ffmpeg audio pipe is read a chunk at a time, so a
decoder's memory does not depend on the recording's length.  Stopping decord makes the next
chunk start again from a keyframe; a recording whose keyframes are far apart (a browser's
MediaRecorder writes one at the start) would then decode its beginning again for every
chunk, quadratic in its length, so such recordings are read in one sequential pass with
PyAV instead (:class:`StreamingFrameSampler`, chosen by :func:`open_sampler`).  PyAV also
reads the streams decord cannot: its wheel's FFmpeg has decoders decord's lacks (AV1 through
libdav1d), so a clip is a ``decode_error`` only when neither can read it."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import av
import decord
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from operators import schema as S
from operators.audio.extract_audio import AudioDecodeError, AudioStream
from operators.io.files import is_remote
from operators.io.probe_media import UNKNOWN_MEDIA
from operators.resources import StageResources
from operators.schema import SAMPLE_RATE
from operators.step import Grain, Step

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
    # Codec threads per decoder (0: ffmpeg's choice); Ray already runs one decoder per CPU.
    num_threads: int = Field(1, ge=0)
    # decord restarts each chunk from the keyframe before it, re-decoding up to this much;
    # 15 s keeps x264's default (a keyframe every 250 frames: 10.4 s at 24 fps) on decord.
    # Further apart (browser recordings), the sequential PyAV pass.
    max_keyframe_gap_s: float = Field(15.0, gt=0)

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


# The face detector needs frames at least as large as its smallest face (40 px by default).
# A picture with a side under this is decoded stretched up to it: such a picture cannot show
# a face, and this way its audio still gets a timeline (status no_face, with a note saying why).
_MIN_SIDE = 64


class _AudioWindows:
    """Serve audio spans in increasing time order from one ffmpeg stream, across damage.

    A damaged stretch of the audio (ffmpeg refuses a packet) does not end it: the samples
    before the damage are kept, the stretch becomes NaN (missing, not silence), and decoding
    resumes after it.  Resuming needs an exact seek, which ffmpeg only does by audio packets
    in a file without video (with video it seeks to a video keyframe, often before the
    damage): so on the first fault the audio track is copied, without re-encoding, into an
    audio-only file in ``scratch`` (deleted with the clip), and each resumption tries points
    ever further after the fault (20 ms, doubling) until ffmpeg decodes again.  ``damage``
    lists the stretches found and not yet reported: (start s, end s or None = to the end,
    ffmpeg's reason).  Memory: the samples of the current span plus one window's overlap.
    """

    _FIRST_STEP_S = 0.02  # about one AAC packet (1024 samples at 48 kHz)

    def __init__(self, path: Path, duration_s: float, scratch: contextlib.ExitStack):
        self._path, self._duration_s, self._scratch = path, duration_s, scratch
        self._stream: AudioStream | None = AudioStream(path).__enter__()
        self._copy: Path | None = None
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index of self._buffer[0]
        self.damage: list[tuple[float, float | None, str]] = []

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def span(self, start_s: float, end_s: float) -> np.ndarray:
        start, end = round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE)
        while self._stream is not None and self._buffer_start + len(self._buffer) < end:
            try:
                more = self._stream.read(end - self._buffer_start - len(self._buffer))
            except AudioDecodeError as exc:
                self._resume_after_damage(exc)
                continue
            if not len(more):
                break
            self._buffer = np.concatenate([self._buffer, more])
        out = self._buffer[max(0, start - self._buffer_start): end - self._buffer_start].copy()
        drop = max(0, start - self._buffer_start)
        self._buffer, self._buffer_start = self._buffer[drop:], self._buffer_start + drop
        return out

    def _resume_after_damage(self, exc: AudioDecodeError) -> None:
        self.close()
        fault = self._buffer_start + len(self._buffer)
        fault_s = fault / SAMPLE_RATE
        copy = self._audio_copy()
        step = self._FIRST_STEP_S
        while copy is not None and fault_s + step < self._duration_s:
            resume_s = fault_s + step
            stream = AudioStream(copy, start_s=resume_s).__enter__()
            try:
                first = stream.read(SAMPLE_RATE // 10)
            except AudioDecodeError:
                stream.close()
                step *= 2
                continue
            self._stream = stream
            gap = np.full(max(0, round(resume_s * SAMPLE_RATE) - fault), np.nan, np.float32)
            self._buffer = np.concatenate([self._buffer, gap, first])
            self.damage.append((fault_s, resume_s, exc.reason))
            return
        self.damage.append((fault_s, None, exc.reason))

    def _audio_copy(self) -> Path | None:
        """The audio track alone (stream copy), made once per clip; None if ffmpeg cannot."""
        if self._copy is None:
            folder = Path(self._scratch.enter_context(
                tempfile.TemporaryDirectory(prefix="emoray-audio-")))
            self._copy = folder / "audio.mov"
            copied = subprocess.run(
                ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i",
                 str(self._path), "-map", "0:a:0", "-c", "copy", "-f", "mov", str(self._copy)],
                capture_output=True, check=False)
            if copied.returncode:
                logger.warning("%s: cannot copy the audio track to resume after damage: %s",
                               self._path.name, copied.stderr.decode(errors="replace")[-300:])
                self._copy.unlink(missing_ok=True)
        return self._copy if self._copy.exists() else None


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


class DecodeFrames(Step):
    """Decode one clip row into chunk rows (a generator: one chunk in memory at a time).

    Reads ``LOCAL_PATH``, ``URI``, ``STATUS`` and the media facts.  Emits one row per
    ``chunk_s`` of the clip with ``FRAMES`` (uint8 n×H×W×3 RGB at the working size, rotation
    applied), ``FRAME_TS``, ``FRAME_WIDTH``/``FRAME_HEIGHT``, ``AUDIO`` (16 kHz mono float32 from
    ``AUDIO_START_S`` = chunk start, covering the chunk plus ``window_s - hop_s`` so the last
    windows are complete; empty without an audio stream), ``CHUNK_*`` and ``N_CHUNKS`` (so
    a chunk lost later to repeated worker failures is noticed), and ``VIDEO_DECODER`` (the
    library that read the chunk's frames, ``decord`` or ``pyav``; "" on a row without
    frames).  A generator: frames and audio are decoded as each chunk is asked for, so only
    one chunk is in memory at a time (see :class:`FrameSampler` and ``_AudioWindows``).

    Failure behaviour: a clip that already failed (staging/probe) becomes one row with its
    status and no media.  A stream decord cannot open, or faults on before its first frame,
    is read by PyAV instead (see :func:`open_sampler`).  A decode error before any frame
    (neither library read one; decord's reason is the message) ends the clip with
    ``decode_error``; one after some frames ends it with ``partial``: the frames before the
    fault are kept (the faulty chunk is cut at the first sample that could not be decoded,
    and the message names that time).  Damaged audio marks the chunk ``partial`` with the
    damaged stretch in ``ERROR``; its samples are NaN (missing) and the audio after it is
    decoded as usual (the stretch runs to the end when nothing after it decodes).  A picture
    with a side under 64 px is decoded stretched to 64 px and noted in ``ERROR`` (it cannot
    show a face).  Staged copies of remote inputs are deleted when the clip is done.
    Resources: ``resources.decode`` (decord + one ffmpeg process).
    """

    name = "decode"
    grain = Grain.ROWS
    reads = (S.LOCAL_PATH, S.URI, S.STATUS, S.ERROR, S.STAGE_SECONDS, *UNKNOWN_MEDIA)
    writes = (S.CHUNK_INDEX, S.N_CHUNKS, S.CHUNK_START_S, S.CHUNK_END_S, S.FRAMES, S.FRAME_TS,
              S.FRAME_WIDTH, S.FRAME_HEIGHT, S.AUDIO, S.AUDIO_START_S, S.VIDEO_DECODER,
              S.STATUS, S.ERROR)
    drops = (S.LOCAL_PATH,)

    def __init__(self, config: DecodeConfig, resources: StageResources | None = None):
        super().__init__(resources)
        self.config = config

    def process(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        local = Path(row[S.LOCAL_PATH]) if row[S.LOCAL_PATH] else None
        row[S.VIDEO_DECODER] = ""  # until a sampler has read frames
        try:
            if row[S.STATUS]:
                yield _empty_media(_chunk_row(row, 0, 0.0, 0.0))
                return
            yield from _decode_chunks(row, local, self.config)
        finally:
            if local is not None and is_remote(row[S.URI]):
                local.unlink(missing_ok=True)


def _decode_chunks(
    row: dict[str, Any], path: Path, config: DecodeConfig
) -> Iterator[dict[str, Any]]:
    duration = float(row[S.DURATION_S])
    # The displayed size: decord turns frames upright itself (see FrameSampler).
    disp_w, disp_h = int(row[S.WIDTH]), int(row[S.HEIGHT])
    width, height = working_size(disp_w, disp_h, config.max_side)
    note = ""
    if min(width, height) < _MIN_SIDE:
        width, height = max(width, _MIN_SIDE), max(height, _MIN_SIDE)
        note = (f"picture is {disp_w}×{disp_h} px, too small to show a face "
                f"(decoded stretched to {width}×{height})")
    with contextlib.ExitStack() as stack:
        try:
            sampler = open_sampler(path, width, height, row, config, stack)
        except (decord.DECORDError, av.FFmpegError) as exc:
            failed = _empty_media(_chunk_row(row, 0, 0.0, 0.0))
            failed[S.STATUS] = S.Status.DECODE_ERROR.value
            # without the local (possibly staged temporary) path decord puts in brackets
            reason = (_first_line(exc).replace(f"[{path}] ", "")
                      if isinstance(exc, decord.DECORDError) else _av_reason(exc))
            failed[S.ERROR] = f"decoder could not open the video stream: {reason}"
            yield failed
            return

        n_chunks = max(1, math.ceil(duration / config.chunk_s - 1e-9))
        overlap = config.window_s - config.hop_s
        windows = None
        if row[S.HAS_AUDIO]:
            windows = _AudioWindows(path, duration, stack)
            stack.callback(windows.close)
        for index in range(n_chunks):
            start = index * config.chunk_s
            end = min(duration, start + config.chunk_s)
            chunk = _chunk_row(row, index, start, end, n_chunks)
            chunk[S.STAGE_SECONDS] = 0.0 if index else row[S.STAGE_SECONDS]
            if note and not index:
                chunk[S.ERROR] = note
            times = np.arange(math.ceil(start * config.sample_fps - 1e-9),
                              math.ceil(end * config.sample_fps - 1e-9)) / config.sample_fps
            frames = sampler.take(times)
            if not index and not len(frames) and sampler.fault is not None:
                sampler, frames = _read_with_pyav(sampler, times, path, width, height, row,
                                                  config, stack)
            fault = None
            if sampler.fault is not None and len(frames) < len(times):
                fault_s = float(times[len(frames)])
                fault = f"video decoding failed at {fault_s:.1f}s: {sampler.fault}"
                if not len(frames):
                    status = S.Status.PARTIAL if index else S.Status.DECODE_ERROR
                    failed = _empty_media(chunk)
                    failed[S.STATUS] = status.value
                    failed[S.ERROR] = fault
                    yield failed
                    return
                # The chunk now ends at the first sample that could not be decoded, so the
                # timeline's windows stop there too; the clip ends after this chunk.
                times, end = times[:len(frames)], fault_s
                chunk[S.CHUNK_END_S] = end
                chunk[S.STATUS] = S.Status.PARTIAL.value
                chunk[S.ERROR] = "; ".join(e for e in (chunk[S.ERROR], fault) if e)
            chunk[S.FRAMES] = frames
            chunk[S.VIDEO_DECODER] = sampler.decoder
            chunk[S.FRAME_TS] = times.astype(np.float64)
            chunk[S.FRAME_HEIGHT], chunk[S.FRAME_WIDTH] = int(frames.shape[1]), int(frames.shape[2])
            chunk[S.AUDIO_START_S] = start
            chunk[S.AUDIO] = np.zeros(0, np.float32)
            if windows is not None:
                chunk[S.AUDIO] = windows.span(start, min(duration, end + overlap))
                for damage_s, resumed_s, why in windows.damage:
                    chunk[S.STATUS] = S.Status.PARTIAL.value
                    where = (f"{damage_s:.1f}-{resumed_s:.1f}s" if resumed_s is not None
                             else f"{damage_s:.1f}s, none after it")
                    damaged = f"audio damaged at {where} ({why}): voice columns null there"
                    chunk[S.ERROR] = "; ".join(e for e in (chunk[S.ERROR], damaged) if e)
                windows.damage.clear()
            yield chunk
            if fault is not None:
                return


def open_sampler(path: Path, width: int, height: int, row: dict[str, Any],
                 config: DecodeConfig, stack: contextlib.ExitStack
                 ) -> FrameSampler | StreamingFrameSampler:
    """The frame sampler for one clip, entered on ``stack``: decord's
    :class:`FrameSampler`; :class:`StreamingFrameSampler` (PyAV, one sequential pass) when
    decord cannot open the video stream (its bundled FFmpeg has no decoder for it: AV1) and
    PyAV decodes its first frame, or when the recording's keyframes are more than
    ``config.max_keyframe_gap_s`` apart.  Raises decord's ``decord.DECORDError`` when
    neither library can open the stream (its reason is the clip's message)."""
    try:
        sampler = stack.enter_context(FrameSampler(
            path, width, height, str(row[S.CONTAINER]), config.num_threads))
    except decord.DECORDError as exc:
        streaming = _open_streaming(path, width, height, row, config, stack)
        if streaming is None:
            raise
        logger.info("%s: decord cannot open its %s video stream (%s); PyAV decodes it",
                    path.name, row[S.VIDEO_CODEC] or "unnamed", _first_line(exc))
        return streaming
    if sampler.max_keyframe_gap_s <= config.max_keyframe_gap_s:
        return sampler
    logger.info("%s: keyframes up to %.0f s apart; decoding it in one sequential pass",
                path.name, sampler.max_keyframe_gap_s)
    sampler.__exit__()
    return stack.enter_context(StreamingFrameSampler(
        path, width, height, _rotation(row), config.num_threads))


def _rotation(row: dict[str, Any]) -> int:
    """The probe's rotation as whole degrees clockwise (0 when unknown)."""
    rotation = row[S.ROTATION]
    return int(rotation) % 360 if rotation == rotation else 0  # NaN: unknown, as stored


def _open_streaming(path: Path, width: int, height: int, row: dict[str, Any],
                    config: DecodeConfig, stack: contextlib.ExitStack
                    ) -> StreamingFrameSampler | None:
    """PyAV's sampler entered on ``stack`` if it decodes the stream's first frame, else None
    (the reason is logged: the caller reports decord's)."""
    try:
        sampler = stack.enter_context(StreamingFrameSampler(
            path, width, height, _rotation(row), config.num_threads))
    except av.FFmpegError as exc:
        logger.info("%s: PyAV cannot open the video stream either: %s", path.name,
                    _av_reason(exc))
        return None
    if sampler.readable:
        return sampler
    logger.info("%s: PyAV decodes no frame of the video stream either: %s", path.name,
                sampler.fault)
    sampler.__exit__()
    return None


def _read_with_pyav(sampler: FrameSampler | StreamingFrameSampler, times: np.ndarray,
                    path: Path, width: int, height: int, row: dict[str, Any],
                    config: DecodeConfig, stack: contextlib.ExitStack
                    ) -> tuple[FrameSampler | StreamingFrameSampler, np.ndarray]:
    """The first chunk's sampler and frames after ``sampler`` faulted before its first frame:
    decord's fault is retried with PyAV, which goes on from there if it decodes frames at
    ``times``; otherwise ``sampler`` and no frames (its fault is the clip's message)."""
    empty = np.zeros((0, height, width, 3), np.uint8)
    if not isinstance(sampler, FrameSampler):
        return sampler, empty
    streaming = _open_streaming(path, width, height, row, config, stack)
    frames = streaming.take(times) if streaming is not None else empty
    if not len(frames):
        return sampler, empty
    logger.info("%s: decord cannot read its video stream (%s); PyAV decodes it", path.name,
                sampler.fault)
    return streaming, frames


class FrameSampler:
    """The frames on screen at given times, decoded by decord one chunk at a time.

    A context manager over a ``decord.VideoReader`` asked for ``width`` × ``height`` as
    displayed: decord's CPU reader turns frames upright itself (from the same display matrix
    / rotate tag the probe reports as ``ROTATION``) and scales after turning, so its frames
    must not be turned again (turning them twice laid a phone video's face on its side).
    :meth:`take` is called with increasing sample times (seconds from the stream's first
    timestamp) and returns, for each, the frame on screen then: the last frame starting at or
    before it, from decord's real per-frame timestamps, so variable-frame-rate files are
    sampled correctly (a time before the first frame gets the first frame, one after the last
    frame the last frame).  A Matroska/WebM file without a duration in its header (what a
    browser's MediaRecorder streams), which decord cannot open, is read from a copy of its
    video stream (no re-encoding) in a temporary folder deleted on exit.

    Memory: decord's decoder keeps decoding ahead of a reader that stops asking (dmlc/decord
    issues #157, #197, #208: with a consumer pausing 3 s after each 10 s chunk of a 640×480
    recording, a decoder held 7 GB after 200 s; 0.3 GB with the seek below).  So
    :meth:`take` ends by seeking the reader back to the first frame, which stops the decoder
    and drops what it had read ahead; the next call's ``get_batch`` then seeks accurately to
    the keyframe before its first frame, as it does for any jump.  Not a seek to that frame
    or to its keyframe: decord's fast seek counts a target that is not a keyframe as reached
    while its demuxer stands on another keyframe (the frames after it were wrong), and a seek
    to where decord thinks it stands does nothing (a keyframe that was the chunk's last
    sample: the read-ahead went on).

    A stretch the codec refuses (damaged data) ends the clip's frames: :attr:`fault` then
    says why, and :meth:`take` returns the frames before the damage (possibly fewer than
    asked).  Opening a file without a decodable video stream raises ``decord.DECORDError``.
    """

    decoder: ClassVar[str] = "decord"  # schema.VIDEO_DECODER

    def __init__(self, path: str | Path, width: int, height: int, container: str = "",
                 threads: int = 1):
        self._path, self._container = Path(path), container
        self._width, self._height, self._threads = width, height, threads
        self._scratch = contextlib.ExitStack()
        self._reader: decord.VideoReader | None = None
        self._video = self._path  # the file decoded: the input or its remuxed copy
        self._starts = np.zeros(0)
        # The longest stretch between keyframes (and from the last one to the end), seconds.
        self.max_keyframe_gap_s = 0.0
        self.fault: str | None = None

    def __enter__(self) -> FrameSampler:
        try:
            try:
                self._reader = self._open(self._path)
            except decord.DECORDError as exc:
                # A copy does not help a codec decord has no decoder for (AV1).
                if ("matroska" not in self._container or _NO_DECODER in str(exc)
                        or not self._remux()):
                    raise  # decord's reason is the clip's message
                logger.info("%s: no duration in its header; decoding a remuxed copy",
                            self._path.name)
                self._reader = self._open(self._video)
            self._starts = self._reader.get_frame_timestamp(np.arange(len(self._reader)))[:, 0]
            keys = np.asarray(self._reader.get_key_indices(), dtype=np.int64)
            bounds = np.r_[self._starts[keys], self._starts[-1]] if len(keys) else self._starts
            self.max_keyframe_gap_s = float(np.diff(bounds).max()) if len(bounds) > 1 else 0.0
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader = None  # decord's reader closes the file and stops its thread when freed
        self._scratch.close()

    def _open(self, video: Path) -> decord.VideoReader:
        return decord.VideoReader(str(video), width=self._width, height=self._height,
                                  num_threads=self._threads)

    def _remux(self) -> bool:
        """Copy the video stream into a Matroska file, which has a duration in its header,
        and decode that from now on; False if ffmpeg cannot."""
        folder = Path(self._scratch.enter_context(
            tempfile.TemporaryDirectory(prefix="emoray-remux-")))
        remuxed = folder / "video.mkv"
        copied = subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(self._path),
             "-map", "0:v:0", "-c", "copy", "-f", "matroska", str(remuxed)],
            capture_output=True, check=False)
        if copied.returncode:
            return False
        self._video = remuxed
        return True

    def _indices(self, times: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self._starts, times + 1e-6, side="right") - 1
        return np.clip(idx, 0, len(self._starts) - 1)

    def take(self, times: np.ndarray) -> np.ndarray:
        """uint8 n×H×W×3 RGB frames for ``times`` (increasing, each >= the last call's)."""
        empty = np.zeros((0, self._height, self._width, 3), np.uint8)
        if self.fault is not None or self._reader is None or not len(times):
            return empty
        indices = self._indices(times)
        try:
            frames = self._reader.get_batch(indices).asnumpy()
        except decord.DECORDError as exc:
            reason = _first_line(exc).replace(f"[{self._video}] ", "")
            frames = self._frames_before_fault(indices)
            if len(frames) < len(indices):
                self.fault = reason
                self._reader = None
                return frames if len(frames) else empty
        self._reader.seek(0)  # stops the read-ahead (see the class docstring)
        return frames

    def _frames_before_fault(self, indices: np.ndarray) -> np.ndarray:
        """The frames at ``indices`` up to the first one that cannot be decoded (n×H×W×3).

        decord's decoder thread is dead after a fault, so a fresh reader steps through the
        samples one at a time (this runs only for the chunk that holds the fault); if it
        decodes them all, it becomes the reader to go on with.
        """
        frames = []
        try:
            reader = self._open(self._video)
            for index in indices:
                frames.append(reader.get_batch([int(index)]).asnumpy()[0])
        except decord.DECORDError:
            self._reader = None  # the fault: what was decoded before it is the answer
        else:
            self._reader = reader
        if not frames:
            return np.zeros((0, self._height, self._width, 3), np.uint8)
        return np.stack(frames)


# decord prefixes each message with "[hh:mm:ss] /its/source.cc:123: "; the reason follows.
# FFmpeg's AVERROR_DECODER_NOT_FOUND, in decord's message when its FFmpeg lacks the decoder.
_NO_DECODER = "-1128613112"
_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")
# decord's words for a packet the codec refused, with ffmpeg's error code.
_REFUSED_PACKET = re.compile(r"avcodec_send_packet\(.*\(([-\d]+) vs\. 0\)")
_AVERRORS = {-1094995529: "invalid data", -11: "decoder not ready (EAGAIN)"}


def _first_line(exc: Exception) -> str:
    """A short, machine-independent reason for a decord error (its first line, without
    decord's time and source-file prefix; a refused packet in words)."""
    text = _DECORD_PREFIX.sub("", str(exc)).strip().splitlines()
    if not text:
        return type(exc).__name__
    refused = _REFUSED_PACKET.search(text[0])
    if refused:
        code = int(refused.group(1))
        return f"the video codec refused a packet ({_AVERRORS.get(code, f'ffmpeg error {code}')})"
    return text[0][:300]


class StreamingFrameSampler:
    """The frames on screen at given times, from one sequential pass over a video stream (PyAV).

    Used instead of :class:`FrameSampler` for recordings whose keyframes are further apart than
    ``DecodeConfig.max_keyframe_gap_s``, and for video streams decord cannot open or decode
    (AV1: decord's FFmpeg has no decoder for it, PyAV's has libdav1d; see
    :func:`open_sampler`).

    A context manager over a PyAV container.  :meth:`take` is called with increasing sample
    times (seconds from the stream's first timestamp) and returns, for each, the frame on
    screen then: the last frame starting at or before it (real per-frame timestamps, so
    variable-frame-rate files are sampled correctly; a time before the first frame gets the
    first frame, a time after the last one the last frame).  Only those frames are converted:
    scaled to ``width`` × ``height`` as displayed (bicubic, like ffmpeg's scale filter), RGB,
    turned ``rotation`` degrees clockwise.  Memory: one decoded frame and the frames of one
    call, whatever the length of the recording; the file is read as far as the latest
    sample needs, no further.

    A packet the codec refuses (damaged data) ends the pass: :attr:`fault` then says why,
    and :meth:`take` returns the frames before the damage (possibly fewer than asked).
    Opening a file without a video stream, or whose video codec PyAV has no decoder for,
    raises ``av.FFmpegError``; :attr:`readable` says whether the first frame decoded.
    """

    decoder: ClassVar[str] = "pyav"  # schema.VIDEO_DECODER

    def __init__(self, path: str | Path, width: int, height: int, rotation: int = 0,
                 threads: int = 1):
        self._path = str(path)
        self._turns = -(rotation // 90) % 4  # np.rot90 turns counter-clockwise
        # Convert at the stored orientation, then turn: the result has the displayed size.
        self._size = (height, width) if self._turns % 2 else (width, height)
        self._shape = (height, width, 3)
        self._threads = threads
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[tuple[float, av.VideoFrame]] = iter(())
        self._current: tuple[float, av.VideoFrame] | None = None
        self._next: tuple[float, av.VideoFrame] | None = None
        self._converted: tuple[av.VideoFrame, np.ndarray] | None = None  # the last one
        self._damage_s = math.inf
        self.fault: str | None = None

    def __enter__(self) -> StreamingFrameSampler:
        self._container = av.open(self._path)
        try:
            if not self._container.streams.video:
                raise av.error.InvalidDataError(1094995529, "no video stream")
            stream = self._container.streams.video[0]
            if stream.codec_context is None:  # a codec PyAV's FFmpeg has no decoder for
                raise av.error.DecoderNotFoundError(1128613112, "no decoder for the video codec")
            stream.codec_context.thread_count = self._threads
            self._frames = self._decode(stream)
            self._next = next(self._frames, None)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def readable(self) -> bool:
        """Whether the stream gave a frame (False: its first packets do not decode)."""
        return self._current is not None or self._next is not None

    def __exit__(self, *exc: object) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _decode(self, stream: av.VideoStream) -> Iterator[tuple[float, av.VideoFrame]]:
        start = stream.start_time or 0
        time_base = float(stream.time_base)
        step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
        last = -math.inf
        packets = self._container.demux(stream)
        while True:
            packet = None
            try:
                packet = next(packets, None)
                if packet is None:
                    return
                decoded = packet.decode()  # the last, empty packet flushes the decoder
            except av.FFmpegError as exc:
                self.fault = _av_reason(exc)
                if packet is not None and packet.pts is not None:
                    self._damage_s = (packet.pts - start) * time_base
                else:
                    self._damage_s = last + step
                return
            for frame in decoded:
                # A frame without a timestamp (some AVI/FLV) follows the previous one.
                t = (frame.pts - start) * time_base if frame.pts is not None else last + step
                last = t
                yield t, frame

    def take(self, times: np.ndarray) -> np.ndarray:
        """uint8 n×H×W×3 RGB frames for ``times`` (increasing, each >= the last call's)."""
        out = []
        for t in times:
            while self._next is not None and self._next[0] <= t + 1e-6:
                self._current, self._next = self._next, next(self._frames, None)
            if self._next is None and t + 1e-6 >= self._damage_s:
                break  # at or past damaged data: nothing sound is on screen
            shown = self._current if self._current is not None else self._next
            if shown is None:
                break  # no frame decoded at all
            out.append(self._rgb(shown[1]))
        return np.stack(out) if out else np.zeros((0, *self._shape), np.uint8)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        # Consecutive samples of one frame (a static stretch of a VFR file) convert it once.
        if self._converted is None or self._converted[0] is not frame:
            width, height = self._size
            rgb = frame.reformat(width=width, height=height, format="rgb24",
                                 interpolation="BICUBIC").to_ndarray()
            self._converted = (frame, np.rot90(rgb, self._turns) if self._turns else rgb)
        return self._converted[1]


# ffmpeg's error codes for a packet the codec refused, in words.
_AV_ERRORS = {1094995529: "invalid data", 11: "decoder not ready (EAGAIN)"}


def _av_reason(exc: av.FFmpegError) -> str:
    """A short, machine-independent reason (no local paths) for a PyAV error."""
    if "avcodec_send_packet" in str(exc):
        code = abs(exc.errno or 0)
        return f"the video codec refused a packet ({_AV_ERRORS.get(code, f'ffmpeg error {code}')})"
    return (exc.strerror or type(exc).__name__).strip()[:300]
