"""Face tracks: link per-frame detections of one clip into people over time."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class TrackConfig(BaseModel):
    """Linking thresholds.  A webcam participant barely moves between samples 0.2 s apart."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Overlap needed to continue a track from one sampled frame to the next.
    link_iou: float = Field(0.3, gt=0, le=1)
    # A track not seen for this long is closed (the face left or was occluded).
    max_gap_s: float = Field(2.0, gt=0)
    # A closed track is continued by a later one starting at about the same place: people
    # in usability sessions return to the same seat, so this rejoins them after a gap.
    rejoin_iou: float = Field(0.2, ge=0, le=1)
    # Tracks with fewer detections are dropped as detector noise.
    min_detections: int = Field(3, ge=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4) as (n, m)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def link_tracks(
    frame_ts: np.ndarray, face_frame: np.ndarray, boxes: np.ndarray, config: TrackConfig
) -> np.ndarray:
    """Track id of every detection: 0 = the most-seen face, 1.. = the others, -1 = dropped.

    ``face_frame`` indexes ``frame_ts`` (sorted by time); ``boxes`` are (n, 4).  Detections
    are linked greedily frame to frame by IoU, tracks that end are rejoined by later tracks
    that start where they ended, short tracks are dropped, and tracks are numbered by
    detections (ties: the larger face first).  Who of them is the participant is decided
    later, from evidence (``operators.fusion.participant.choose_participant``).
    """
    n = len(face_frame)
    raw = np.full(n, -1, np.int64)
    if n == 0:
        return raw.astype(np.int32)
    order = np.argsort(face_frame, kind="stable")
    last_box: list[np.ndarray] = []
    last_ts: list[float] = []
    first_box: list[np.ndarray] = []
    first_ts: list[float] = []
    for frame in np.unique(face_frame):
        idx = order[face_frame[order] == frame]
        ts = float(frame_ts[frame])
        active = [t for t in range(len(last_box)) if ts - last_ts[t] <= config.max_gap_s]
        taken: set[int] = set()
        if active:
            overlap = iou(boxes[idx], np.stack([last_box[t] for t in active]))
            for flat in np.argsort(-overlap, axis=None):
                d, a = np.unravel_index(flat, overlap.shape)
                if overlap[d, a] < config.link_iou:
                    break
                if raw[idx[d]] >= 0 or active[a] in taken:
                    continue
                raw[idx[d]] = active[a]
                taken.add(active[a])
        for d in idx[raw[idx] < 0]:
            raw[d] = len(last_box)
            first_box.append(boxes[d])
            first_ts.append(ts)
            last_box.append(boxes[d])
            last_ts.append(ts)
        for d in idx:
            last_box[raw[d]], last_ts[raw[d]] = boxes[d], ts

    # Rejoin: map each track to an earlier one that ended before it started, at its place.
    parent = list(range(len(last_box)))
    end_of = {t: (last_ts[t], last_box[t]) for t in range(len(last_box))}
    for t in sorted(range(len(last_box)), key=lambda k: first_ts[k]):
        for earlier in sorted(set(parent[:t])):
            root_end_ts, root_end_box = end_of[earlier]
            if root_end_ts < first_ts[t] and (
                iou(first_box[t][None], root_end_box[None])[0, 0] >= config.rejoin_iou
            ):
                parent[t] = earlier
                end_of[earlier] = end_of[t]
                break
    merged = np.asarray(parent)[raw]

    ids, counts = np.unique(merged, return_counts=True)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = [(c, float(np.median(areas[merged == i])), i)
            for i, c in zip(ids, counts, strict=True) if c >= config.min_detections]
    keep.sort(reverse=True)
    final = np.full(n, -1, np.int32)
    for rank, (_, _, track) in enumerate(keep):
        final[merged == track] = rank
    return final


def match_one_to_one(a: np.ndarray, b: np.ndarray, min_iou: float) -> np.ndarray | None:
    """Pair every box of ``a`` (n, 4) with one of ``b`` (n, 4) by IoU, or None.

    Returns ``order`` such that ``a[i]`` continues as ``b[order[i]]`` (greedy, best overlap
    first), or None when the two sets differ in size or any pair overlaps less than
    ``min_iou``: the detect-then-track path then re-detects the frames in between instead of
    trusting an interpolation across a face that came, went or jumped.
    """
    if len(a) != len(b):
        return None
    if len(a) == 0:
        return np.zeros(0, np.int64)
    overlap = iou(a, b)
    order = np.full(len(a), -1, np.int64)
    taken = np.zeros(len(b), bool)
    for flat in np.argsort(-overlap, axis=None):
        i, j = np.unravel_index(flat, overlap.shape)
        if order[i] >= 0 or taken[j]:
            continue
        if overlap[i, j] < min_iou:
            return None
        order[i], taken[j] = j, True
    return order
