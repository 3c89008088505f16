"""Face crops of labelled videos for training, through the timeline job's own operators.

    video rows ─ stage ─ probe ─ decode (chunk rows of frames) ─ FaceDetector (MTCNN, aligned
    crops) ─ face samples: each sampled frame's most confident face, with its video's labels

So a model trained on these crops sees faces detected, aligned and cropped exactly as the
timeline job will show them to it.  Frames are sampled every ``hop_s`` seconds.  A video that
cannot be read, or in which no face is found, becomes one sample row with ``error`` set
(``read_error``/``decode_error``/``no_face`` …), never a failed job.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data

from operators import schema as S
from operators.batches import to_list_columns
from operators.io.decode_frames import DecodeConfig, DecodeFrames
from operators.io.files import StorageOptions
from operators.io.probe_media import ProbeMedia
from operators.io.stage_input import StageInput
from operators.resources import StageResources
from operators.step import apply_steps
from operators.vision.detect_faces import FaceDetector, FaceDetectorConfig
from pipelines.train.corpora.parquet import (
    ERROR,
    IMAGE,
    png_bytes,
    prepared_schema,
    target_columns,
)
from pipelines.train.table import END_S, START_S

_STAGING = str(Path(tempfile.gettempdir()) / "emoray-train-staging")


def _sample_rows(labels: pd.DataFrame, uri: str, times: np.ndarray, crops: list[np.ndarray],
                 error: str) -> pa.Table:
    """Samples of one video: a crop per frame time, labelled by every manifest window of
    ``uri`` that contains the time (the whole file when a window has no bounds)."""
    windows = labels[labels[S.URI] == uri]
    images: list[bytes | None] = []
    picked: list[int] = []
    starts: list[float] = []
    for row in range(len(windows)):
        start = windows[START_S].iloc[row] if START_S in windows else math.nan
        end = windows[END_S].iloc[row] if END_S in windows else math.nan
        inside = np.ones(len(times), bool)
        if not math.isnan(start):
            inside &= times >= start
        if not math.isnan(end):
            inside &= times < end
        for i in np.flatnonzero(inside):
            images.append(png_bytes(crops[i]))
            picked.append(row)
            starts.append(float(times[i]))
    schema = prepared_schema("face")
    if not images:
        reason = error or f"{S.Status.NO_FACE.value}: no face found in the sampled frames"
        columns = {IMAGE: [None] * len(windows), **target_columns(windows),
                   ERROR: [reason] * len(windows)}
        return pa.Table.from_pydict(columns, schema=schema)
    rows = windows.iloc[picked]
    columns = {IMAGE: images, **target_columns(rows, starts, starts),
               ERROR: [None] * len(images)}
    return pa.Table.from_pydict(columns, schema=schema)


def _make_samples_fn(labels: pd.DataFrame, size: int):
    def face_samples(group: dict[str, np.ndarray]) -> pa.Table:
        """One clip's chunk rows (grouped by clip) → its face sample rows."""
        uri = str(group[S.URI][0])
        times, crops, errors = [], [], []
        for i in range(len(group[S.URI])):
            if group[S.STATUS][i]:
                errors.append(f"{group[S.STATUS][i]}: {group[S.ERROR][i]}")
                continue
            frame_ts = np.asarray(group[S.FRAME_TS][i], np.float64)
            frames = np.asarray(group[S.FACE_FRAME][i], np.int64)
            scores = np.asarray(group[S.FACE_SCORE][i], np.float32)
            chunk_crops = np.asarray(group[S.FACE_CROPS][i], np.uint8).reshape(
                len(frames), size, size, 3)
            for frame in np.unique(frames):
                best = np.flatnonzero(frames == frame)[np.argmax(scores[frames == frame])]
                times.append(frame_ts[frame])
                crops.append(chunk_crops[best])
        return _sample_rows(labels, uri, np.asarray(times), crops, "; ".join(errors))

    return face_samples


def video_face_rows(table: pd.DataFrame, source: Any, storage_options: StorageOptions
                    ) -> ray.data.Dataset:
    """The lazy dataset of prepared face rows (``prepared_schema("face")``) for the labelled
    videos of ``table`` (adapter rows; several rows may share a video)."""
    uris = sorted(set(table[S.URI]))
    rows = [{S.CLIP_ID: S.clip_id_for(uri), S.URI: uri, S.SIZE_BYTES: -1, S.STATUS: "",
             S.ERROR: "", S.STAGE_SECONDS: 0.0} for uri in uris]
    decode = DecodeConfig(sample_fps=1.0 / source.hop_s, window_s=source.window_s,
                          hop_s=source.hop_s)
    # Every sampled frame detected (no tracking between keyframes): training wants each
    # crop as MTCNN gives it.
    detector = FaceDetectorConfig(detection_stride=1)
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # Half a CPU per step, as in the timeline job: fits beside the detector on 2 CPUs.
    half = StageResources(num_cpus=0.5, batch_size=1, actors=(1, 2))
    ds = apply_steps(ds, [StageInput(storage_options, _STAGING, half), ProbeMedia(half),
                          DecodeFrames(decode, half), FaceDetector(detector, half)],
                     S.INPUT_SCHEMA)
    keep = [S.URI, S.STATUS, S.ERROR, S.FRAME_TS, S.FACE_FRAME, S.FACE_SCORE, S.FACE_CROPS]
    # Flat list columns: the hash shuffle cannot mix fixed- and variable-shape tensor blocks.
    ds = ds.select_columns(keep).map_batches(to_list_columns, batch_format="numpy",
                                             num_cpus=0.5)
    return ds.groupby(S.URI, num_partitions=max(1, min(len(uris), 16))).map_groups(
        _make_samples_fn(table, detector.crop_size), batch_format="numpy", num_cpus=0.5)
