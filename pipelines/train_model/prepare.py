"""Preparation: a corpus in its published layout → sharded Parquet of training samples.

``emoray prepare CONFIG`` (and ``emoray train``, for sources that are not Parquet yet) runs
this as a Ray Data job: the corpus's table of samples (``pipelines.train.datasets`` adapters,
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

Output: Parquet shards with :func:`prepared_schema` (task inputs + ``label``, ``label_dist``,
``vote_dist``, ``valence``, ``arousal``, ``subject``, ``split``, ``uri``, ``start_s``,
``end_s``, ``error``).  A sample that cannot be decoded (a corrupt image or audio file, a
video without a face) becomes a row with ``error`` set and null inputs, not a failed job;
training and evaluation leave such rows out and log their count.  Fusion and temporal
samples are model features, not media: prepare them with the face/voice models and give
``format: parquet`` (columns in ``tasks.py``).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from PIL import Image, UnidentifiedImageError
from pyarrow.fs import FSSpecHandler, PyFileSystem

from operators.audio.extract_audio import SAMPLE_RATE, AudioDecodeError
from operators.fusion.build_timeline import CIRCUMPLEX
from operators.io.files import StorageOptions, open_fs
from operators.schema import AROUSAL, AUDIO, EMOTIONS, URI, VALENCE, VIDEO_EXTENSIONS
from pipelines.train import datasets as D
from pipelines.train_model.config import DataSource
from pipelines.train_model.tasks import IMAGE, VOTE_DIST

logger = logging.getLogger(__name__)

ERROR = "error"
MAX_IMAGE_SIDE = 128  # above every face network's input (112 px at most): keeps shards small

_TARGETS = pa.schema([
    (D.LABEL, pa.int64()), (D.LABEL_DIST, pa.list_(pa.float32())),
    (VOTE_DIST, pa.list_(pa.float32())), (VALENCE, pa.float64()), (AROUSAL, pa.float64()),
    (D.SUBJECT, pa.string()), (D.SPLIT, pa.string()), (URI, pa.string()),
    (D.START_S, pa.float64()), (D.END_S, pa.float64()), (ERROR, pa.string()),
])


def prepared_schema(task: str) -> pa.Schema:
    """Columns of a prepared shard for ``task`` (face: ``image``; voice: ``audio``)."""
    if task == "face":
        inputs = [pa.field(IMAGE, pa.binary())]
    elif task == "voice":
        inputs = [pa.field(AUDIO, pa.list_(pa.float32()))]
    else:
        raise ValueError(f"the {task} task trains on model features: prepare its Parquet "
                         "with the face/voice models and use format: parquet")
    return pa.schema([*inputs, *_TARGETS])


# --- the sample table -----------------------------------------------------------------------
def source_table(source: DataSource, storage_options: StorageOptions | None = None
                 ) -> pd.DataFrame:
    """The labelled samples of ``source`` (adapter table, split applied, ``split`` rows kept).

    Raises ValueError when the split leaves no rows (a wrong split name or subject list)."""
    options = storage_options or {}
    if source.format == "fer2013":
        table = D.read_fer2013(source.uri, options)
    elif source.format == "ferplus":
        table = D.read_ferplus(source.uri, str(source.fer2013_uri), source.ferplus_scheme,
                               contempt=source.contempt, seed=source.split_seed,
                               storage_options=options)
    elif source.format == "ravdess":
        table = D.ravdess_split(D.read_ravdess(source.uri, options))
    elif source.format == "cremad":
        table = D.read_cremad(source.uri, options)
    elif source.format == "folders":
        table = D.read_image_folders(source.uri, source.contempt, options)
    elif source.format == "manifest":
        table = D.read_manifest(source.uri, options)
    else:
        raise ValueError(f"format {source.format!r} is already prepared")
    if table.empty:
        raise ValueError(f"{source.uri}: no {source.format} samples found")
    if source.split is not None:
        if table[D.SPLIT].isna().all():
            # No split of its own (CREMA-D, most manifests): by subject, never by clip.
            table = _subject_split(table, source)
        table = table[table[D.SPLIT] == source.split].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"{source.uri}: no samples in split {source.split!r}")
    if source.va_targets == "circumplex":
        table = circumplex_targets(table)
    return table


def circumplex_targets(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose missing valence/arousal (NaN or absent) are the labelled
    class's :data:`~operators.fusion.build_timeline.CIRCUMPLEX` point; unlabelled rows and
    the corpus's own ratings stay as they are."""
    points = np.array([CIRCUMPLEX[name] for name in EMOTIONS], np.float64)
    out = table.copy()
    labels = out[D.LABEL].to_numpy(np.int64)
    for column, axis in ((VALENCE, 0), (AROUSAL, 1)):
        values = (np.array(out[column], dtype=np.float64) if column in out
                  else np.full(len(out), math.nan))
        fill = np.isnan(values) & (labels >= 0)
        values[fill] = points[labels[fill], axis]
        out[column] = values
    return out


def _subject_split(table: pd.DataFrame, source: DataSource) -> pd.DataFrame:
    return D.split_by_subject(table, source.val_subjects, source.test_subjects,
                              source.split_seed)


# --- decoding, per batch ----------------------------------------------------------------------
def _png(pixels: np.ndarray) -> bytes:
    image = Image.fromarray(pixels)
    if max(image.size) > MAX_IMAGE_SIDE:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _floats(value: Any) -> list[float] | None:
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    return [float(v) for v in np.asarray(value, dtype=np.float32)]


def _target_columns(rows: pd.DataFrame, starts: list[float] | None = None,
                    ends: list[float] | None = None) -> dict[str, list[Any]]:
    def column(name: str, default: Any) -> list[Any]:
        return rows[name].tolist() if name in rows else [default] * len(rows)

    def text(values: list[Any]) -> list[str | None]:
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                for v in values]

    return {
        D.LABEL: [int(v) for v in column(D.LABEL, D.NO_LABEL)],
        D.LABEL_DIST: [_floats(v) for v in column(D.LABEL_DIST, None)],
        VOTE_DIST: [_floats(v) for v in column(VOTE_DIST, None)],
        VALENCE: [float(v) for v in column(VALENCE, math.nan)],
        AROUSAL: [float(v) for v in column(AROUSAL, math.nan)],
        D.SUBJECT: text(column(D.SUBJECT, None)), D.SPLIT: text(column(D.SPLIT, None)),
        URI: text(column(URI, None)),
        D.START_S: starts if starts is not None else [float(v) for v in column(D.START_S,
                                                                               math.nan)],
        D.END_S: ends if ends is not None else [float(v) for v in column(D.END_S, math.nan)],
    }


def decode_images(batch: pd.DataFrame, storage_options: StorageOptions | None = None
                  ) -> pa.Table:
    """Map-batches function: sample rows of an image corpus → prepared face rows (one each).

    FER2013 rows decode their ``pixels``; others read ``uri``.  An undecodable picture gives
    a row with ``error`` and a null ``image``."""
    images: list[bytes | None] = []
    errors: list[str | None] = []
    for _, row in batch.iterrows():
        try:
            if D.PIXELS in row and isinstance(row[D.PIXELS], str):
                pixels = D.fer_pixels_to_image(row[D.PIXELS])
            else:
                pixels = D.load_image(str(row[URI]), storage_options=storage_options)
            images.append(_png(pixels))
            errors.append(None)
        except (ValueError, OSError, UnidentifiedImageError) as exc:
            logger.warning("%s: cannot decode the picture: %s", row.get(URI), exc)
            images.append(None)
            errors.append(f"decode_error: {exc}")
    columns = {IMAGE: images, **_target_columns(batch), ERROR: errors}
    return pa.Table.from_pydict(columns, schema=prepared_schema("face"))


def loudest_windows(audio: np.ndarray, window_s: float, hop_s: float, limit: int
                    ) -> list[int]:
    """Start samples of the ``limit`` loudest (RMS) windows, in time order.  A recording
    shorter than one window gives one (short) window at 0."""
    size, hop = round(window_s * SAMPLE_RATE), round(hop_s * SAMPLE_RATE)
    if len(audio) <= size:
        return [0]
    starts = np.arange(0, len(audio) - size + 1, hop)
    rms = np.array([np.sqrt(np.mean(np.square(audio[s:s + size], dtype=np.float64)))
                    for s in starts])
    keep = np.sort(np.argsort(-rms, kind="stable")[:limit])
    return [int(s) for s in starts[keep]]


def decode_audio(batch: pd.DataFrame, window_s: float, hop_s: float, max_windows: int,
                 storage_options: StorageOptions | None = None, samples: str = "windows",
                 trim_db: float = 35.0) -> pa.Table:
    """Map-batches function: sample rows of a speech/video corpus → prepared voice rows,
    from the audio inside the row's ``[start_s, end_s)`` when given.  ``samples="windows"``:
    up to ``max_windows`` windows per file (:func:`loudest_windows`); ``"speech"``: one row
    per file, its speech trimmed by :func:`~pipelines.train.datasets.speech_bounds`
    (``start_s``/``end_s`` say where).  A file whose audio cannot be decoded (or has none)
    gives one row with ``error`` and a null ``audio``."""
    size = round(window_s * SAMPLE_RATE)
    parts: list[pa.Table] = []
    schema = prepared_schema("voice")
    for i in range(len(batch)):
        row = batch.iloc[[i]]
        uri = str(row[URI].iloc[0])
        start = float(row[D.START_S].iloc[0]) if D.START_S in row else math.nan
        end = float(row[D.END_S].iloc[0]) if D.END_S in row else math.nan
        offset = 0.0 if math.isnan(start) else start
        try:
            audio = D.load_audio(uri, start, end, storage_options)
            if audio.size == 0:
                raise AudioDecodeError("no audio samples")
        except (AudioDecodeError, ValueError, OSError) as exc:
            logger.warning("%s: cannot decode audio: %s", uri, exc)
            columns = {AUDIO: [None], **_target_columns(row), ERROR: [f"decode_error: {exc}"]}
            parts.append(pa.Table.from_pydict(columns, schema=schema))
            continue
        if samples == "speech":
            first, last = D.speech_bounds(audio, trim_db)
            starts, windows = [first], [audio[first:last].astype(np.float32).tolist()]
            ends = [last]
        else:
            starts = loudest_windows(audio, window_s, hop_s, max_windows)
            windows = [audio[s:s + size].astype(np.float32).tolist() for s in starts]
            ends = [s + size for s in starts]
        repeated = row.loc[row.index.repeat(len(starts))]
        columns = {AUDIO: windows, **_target_columns(
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
        from pipelines.train_model.video_faces import video_face_rows

        ds = video_face_rows(table, source, storage_options or {})
    else:
        # Arrow cannot hold the adapters' ndarray cells of mixed None: plain lists.
        for name in (D.LABEL_DIST, VOTE_DIST):
            if name in table:
                table[name] = [_floats(v) for v in table[name]]
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


def read_prepared(uri: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """A prepared Parquet folder or file as pandas (shards in name order), without the rows
    that failed to decode (their count is logged)."""
    fs, path = open_fs(uri, storage_options or {})
    if not fs.exists(path):
        raise FileNotFoundError(f"prepared data {uri!r} does not exist")
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet")) if fs.isdir(path) else [
        path]
    if not files:
        raise FileNotFoundError(f"no Parquet files under {uri!r}")
    tables = [pq.read_table(f, filesystem=fs) for f in files]
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    if ERROR in frame:
        bad = frame[ERROR].notna()
        if bad.any():
            logger.warning("%s: leaving out %d of %d samples that could not be decoded "
                           "(e.g. %s)", uri, int(bad.sum()), len(frame),
                           frame.loc[bad, ERROR].iloc[0])
            frame = frame[~bad].reset_index(drop=True)
    return frame
