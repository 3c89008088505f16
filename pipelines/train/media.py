"""Decoding one sample's media when the loader needs it: audio by ffmpeg, images by Pillow."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from operators.audio.extract_audio import AudioStream
from operators.io.files import StorageOptions, download, is_remote, open_fs
from operators.schema import SAMPLE_RATE


def load_audio(uri: str, start_s: float = math.nan, end_s: float = math.nan,
               storage_options: StorageOptions | None = None) -> np.ndarray:
    """A file's first audio stream (or the window ``[start_s, end_s)``) as 16 kHz mono float32.

    NaN bounds mean the file's start/end; a window running past the end comes back short.
    Decoded by ffmpeg (any container: FLAC, WAV, MP4 …);
    remote objects are first copied to a temporary local file (decoders need to seek).  Raises
    ``operators.audio.extract_audio.AudioDecodeError`` when ffmpeg cannot decode it.
    """
    start = 0.0 if math.isnan(start_s) else float(start_s)
    n_samples = None if math.isnan(end_s) else round((end_s - start) * SAMPLE_RATE)
    if n_samples is not None and n_samples <= 0:
        raise ValueError(f"empty window [{start_s}, {end_s})")
    if not is_remote(uri):
        return _read_stream(uri, start, n_samples)
    with tempfile.TemporaryDirectory(prefix="emoray-audio-") as tmp:
        local = Path(tmp) / PurePosixPath(uri).name
        download(uri, storage_options or {}, local)
        return _read_stream(str(local), start, n_samples)


def _read_stream(path: str, start_s: float, n_samples: int | None) -> np.ndarray:
    with AudioStream(path, start_s=start_s) as stream:
        if n_samples is not None:
            return stream.read(n_samples)
        parts = []
        while (part := stream.read(SAMPLE_RATE * 10)).size:
            parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load_image(uri: str, grey: bool = False, storage_options: StorageOptions | None = None
               ) -> np.ndarray:
    """An image file as ``uint8`` (H, W, 3) RGB, or (H, W) with ``grey=True`` (Pillow's ITU-R
    601-2 luma).  Raises ``PIL.UnidentifiedImageError`` for a file that is not an
    image."""
    fs, path = open_fs(uri, storage_options or {})
    with fs.open(path, "rb") as handle, Image.open(handle) as image:
        return np.asarray(image.convert("L" if grey else "RGB"))
