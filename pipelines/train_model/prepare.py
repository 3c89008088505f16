"""Preparation: a corpus in its published layout → sharded Parquet of training samples.

``emoray prepare CONFIG`` (and ``emoray train``, for sources that are not Parquet yet) runs
this as a Ray Data job: the corpus's table of samples (``pipelines.train.corpora`` adapters,
split rules of :class:`~pipelines.train_model.config.DataSource`) → decode per batch →
``write_parquet``.  Decoding uses the inference path's own readers, so training sees what the
timeline job sees:

* face, image corpora (FER2013 CSV, FER+, folder trees, manifests of images): the picture as
  PNG bytes (FER2013's 48×48 grey as is; larger pictures scaled to at most 128 px);
* face, video corpora (RAVDESS/CREMA-D videos, manifests of videos): the timeline job's
  stage → probe → decode → MTCNN :class:`~operators.vision.detect_faces.FaceDetector` chain;
  each sampled frame's most confident face becomes a sample (its aligned crop);
* voice (RAVDESS, CREMA-D, manifests; audio or video files): 16 kHz mono windows decoded by
  ffmpeg (:class:`~operators.audio.extract_audio.AudioStream`, as the timeline job does) of
  ``window_s`` every ``hop_s``; the ``max_windows_per_file`` loudest windows of each file are
  kept (in time order), so leading/trailing silence does not carry the clip's emotion label;
  or (``samples: speech``) one row per file with its whole speech, silence trimmed, from which
  training draws fresh windows every epoch.

Output: Parquet shards with :func:`~pipelines.train.corpora.parquet.prepared_schema` (task
inputs + ``label``, ``label_dist``, ``vote_dist``, ``valence``, ``arousal``, ``subject``,
``split``, ``uri``, ``start_s``, ``end_s``, ``error``).  A sample that cannot be decoded (a
corrupt image or audio file, a video without a face) becomes a row with ``error`` set and null
inputs, not a failed job; training and evaluation leave such rows out and log their count.
Fusion and temporal samples are model features, not media: prepare them with the face/voice
models and give ``format: parquet`` (columns in ``pipelines/train/corpora/parquet.py``).
"""

from __future__ import annotations

import logging
import math
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data
from PIL import UnidentifiedImageError
from pyarrow.fs import FSSpecHandler, PyFileSystem

from models.emotions import CIRCUMPLEX
from operators.audio.extract_audio import AudioDecodeError
from operators.io.files import StorageOptions, open_fs
from operators.schema import AROUSAL, AUDIO, EMOTIONS, SAMPLE_RATE, URI, VALENCE, VIDEO_EXTENSIONS
from pipelines.train.corpora.cremad import read_cremad
from pipelines.train.corpora.fer2013 import PIXELS, fer_pixels_to_image, read_fer2013
from pipelines.train.corpora.ferplus import VOTE_DIST, read_ferplus
from pipelines.train.corpora.folders import read_image_folders
from pipelines.train.corpora.manifest import read_manifest
from pipelines.train.corpora.parquet import (
    ERROR,
    IMAGE,
    float_list,
    png_bytes,
    prepared_schema,
    target_columns,
)
from pipelines.train.corpora.ravdess import ravdess_split, read_ravdess
from pipelines.train.media import load_audio, load_image
from pipelines.train.splits import split_by_subject
from pipelines.train.table import END_S, LABEL, LABEL_DIST, SPLIT, START_S
from pipelines.train.utterances import loudest_windows, speech_bounds
from pipelines.train_model.config import DataSource
from pipelines.train_model.video_faces import video_face_rows

logger = logging.getLogger(__name__)


# --- the sample table -----------------------------------------------------------------------
def source_table(source: DataSource, storage_options: StorageOptions | None = None
                 ) -> pd.DataFrame:
    """The labelled samples of ``source`` (adapter table, split applied, ``split`` rows kept).

    Raises ValueError when the split leaves no rows (a wrong split name or subject list)."""
    options = storage_options or {}
    if source.format == "fer2013":
        table = read_fer2013(source.uri, options)
    elif source.format == "ferplus":
        table = read_ferplus(source.uri, str(source.fer2013_uri), source.ferplus_scheme,
                             contempt=source.contempt, seed=source.split_seed,
                             storage_options=options)
    elif source.format == "ravdess":
        table = ravdess_split(read_ravdess(source.uri, options))
    elif source.format == "cremad":
        table = read_cremad(source.uri, options)
    elif source.format == "folders":
        table = read_image_folders(source.uri, source.contempt, options)
    elif source.format == "manifest":
        table = read_manifest(source.uri, options)
    else:
        raise ValueError(f"format {source.format!r} is already prepared")
    if table.empty:
        raise ValueError(f"{source.uri}: no {source.format} samples found")
    if source.split is not None:
        if table[SPLIT].isna().all():
            # No split of its own (CREMA-D, most manifests): by subject, never by clip.
            table = _subject_split(table, source)
        table = table[table[SPLIT] == source.split].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"{source.uri}: no samples in split {source.split!r}")
    if source.va_targets == "circumplex":
        table = circumplex_targets(table)
    return table


def circumplex_targets(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose missing valence/arousal (NaN or absent) are the labelled
    class's :data:`~models.emotions.CIRCUMPLEX` point; unlabelled rows and
    the corpus's own ratings stay as they are."""
    points = np.array([CIRCUMPLEX[name] for name in EMOTIONS], np.float64)
    out = table.copy()
    labels = out[LABEL].to_numpy(np.int64)
    for column, axis in ((VALENCE, 0), (AROUSAL, 1)):
        values = (np.array(out[column], dtype=np.float64) if column in out
                  else np.full(len(out), math.nan))
        fill = np.isnan(values) & (labels >= 0)
        values[fill] = points[labels[fill], axis]
        out[column] = values
    return out


def _subject_split(table: pd.DataFrame, source: DataSource) -> pd.DataFrame:
    return split_by_subject(table, source.val_subjects, source.test_subjects,
                            source.split_seed)


# --- decoding, per batch ----------------------------------------------------------------------
def decode_images(batch: pd.DataFrame, storage_options: StorageOptions | None = None
                  ) -> pa.Table:
    """Map-batches function: sample rows of an image corpus → prepared face rows (one each).

    FER2013 rows decode their ``pixels``; others read ``uri``.  An undecodable picture gives
    a row with ``error`` and a null ``image``."""
    images: list[bytes | None] = []
    errors: list[str | None] = []
    for _, row in batch.iterrows():
        try:
            if PIXELS in row and isinstance(row[PIXELS], str):
                pixels = fer_pixels_to_image(row[PIXELS])
            else:
                pixels = load_image(str(row[URI]), storage_options=storage_options)
            images.append(png_bytes(pixels))
            errors.append(None)
        except (ValueError, OSError, UnidentifiedImageError) as exc:
            logger.warning("%s: cannot decode the picture: %s", row.get(URI), exc)
            images.append(None)
            errors.append(f"decode_error: {exc}")
    columns = {IMAGE: images, **target_columns(batch), ERROR: errors}
    return pa.Table.from_pydict(columns, schema=prepared_schema("face"))


def decode_audio(batch: pd.DataFrame, window_s: float, hop_s: float, max_windows: int,
                 storage_options: StorageOptions | None = None, samples: str = "windows",
                 trim_db: float = 35.0) -> pa.Table:
    """Map-batches function: sample rows of a speech/video corpus → prepared voice rows, from
    the audio inside the row's ``[start_s, end_s)`` when given.  ``samples="windows"``: up to
    ``max_windows`` windows per file (:func:`~pipelines.train.utterances.loudest_windows`);
    ``"speech"``: one row per file, its speech trimmed by
    :func:`~pipelines.train.utterances.speech_bounds` (``start_s``/``end_s`` say where).  A file
    whose audio cannot be decoded (or has none) gives one row with ``error`` and a null
    ``audio``."""
    size = round(window_s * SAMPLE_RATE)
    parts: list[pa.Table] = []
    schema = prepared_schema("voice")
    for i in range(len(batch)):
        row = batch.iloc[[i]]
        uri = str(row[URI].iloc[0])
        start = float(row[START_S].iloc[0]) if START_S in row else math.nan
        end = float(row[END_S].iloc[0]) if END_S in row else math.nan
        offset = 0.0 if math.isnan(start) else start
        try:
            audio = load_audio(uri, start, end, storage_options)
            if audio.size == 0:
                raise AudioDecodeError("no audio samples")
        except (AudioDecodeError, ValueError, OSError) as exc:
            logger.warning("%s: cannot decode audio: %s", uri, exc)
            columns = {AUDIO: [None], **target_columns(row), ERROR: [f"decode_error: {exc}"]}
            parts.append(pa.Table.from_pydict(columns, schema=schema))
            continue
        if samples == "speech":
            first, last = speech_bounds(audio, trim_db)
            starts, windows = [first], [audio[first:last].astype(np.float32).tolist()]
            ends = [last]
        else:
            starts = loudest_windows(audio, window_s, hop_s, max_windows)
            windows = [audio[s:s + size].astype(np.float32).tolist() for s in starts]
            ends = [s + size for s in starts]
        repeated = row.loc[row.index.repeat(len(starts))]
        columns = {AUDIO: windows, **target_columns(
            repeated, [offset + s / SAMPLE_RATE for s in starts],
            [offset + e / SAMPLE_RATE for e in ends]), ERROR: [None] * len(starts)}
        parts.append(pa.Table.from_pydict(columns, schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _is_video(uri: str) -> bool:
    return PurePosixPath(uri).suffix.lower() in VIDEO_EXTENSIONS


# --- the Ray Data job ---------------------------------------------------------------------------
def prepare_source(task: str, source: DataSource, out: str,
                   storage_options: StorageOptions | None = None, rows_per_block: int = 256
                   ) -> str:
    """Write ``source``'s samples for ``task`` as Parquet shards under ``out`` (replaced);
    returns ``out``.  Needs a connected Ray."""
    prepared_schema(task)  # fails fast for tasks that train on features
    table = source_table(source, storage_options)
    if task == "face" and URI in table and table[URI].notna().any() and table[URI].dropna().map(
            _is_video).all():
        ds = video_face_rows(table, source, storage_options or {})
    else:
        # Arrow cannot hold the adapters' ndarray cells of mixed None: plain lists.
        for name in (LABEL_DIST, VOTE_DIST):
            if name in table:
                table[name] = [float_list(v) for v in table[name]]
        # Audio decoding is per file: small blocks spread the files over the CPUs.
        step = rows_per_block if task == "face" else max(1, math.ceil(len(table) / 64))
        ds = ray.data.from_pandas([table.iloc[i:i + step] for i in range(0, len(table), step)])
        if task == "face":
            ds = ds.map_batches(decode_images, batch_format="pandas",
                                fn_kwargs={"storage_options": storage_options or {}},
                                num_cpus=0.5)
        else:
            ds = ds.map_batches(decode_audio, batch_format="pandas", batch_size=4,
                                fn_kwargs={"window_s": source.window_s, "hop_s": source.hop_s,
                                           "max_windows": source.max_windows_per_file,
                                           "samples": source.samples,
                                           "trim_db": source.trim_db,
                                           "storage_options": storage_options or {}},
                                num_cpus=0.5)
    fs, path = open_fs(out, storage_options or {})
    if fs.exists(path):
        fs.rm(path, recursive=True)
    # Ray writes through pyarrow filesystems: wrap fsspec's (it carries the S3 options).
    ds.write_parquet(path, filesystem=PyFileSystem(FSSpecHandler(fs)))
    logger.info("prepared %d %s samples of %s -> %s", len(table), task, source.uri, out)
    return out
