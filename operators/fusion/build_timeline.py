"""Timeline: per clip, face tracks × analysis windows with emotions, valence/arousal and voice."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from operators import schema as S
from operators.vision.track_faces import TrackConfig, link_tracks

logger = logging.getLogger(__name__)

# Valence/arousal of each category (order S.EMOTIONS), on [-1, 1], from the pleasure and
# arousal ratings of emotion terms by Russell & Mehrabian (1977), as tabulated for the basic
# emotions in affective computing (e.g. ALMA, Gebhard 2005).  A window's valence/arousal is
# the probability-weighted mean of these points: a documented stand-in until a model trained
# on valence/arousal labels exists (the VA_SOURCE column says which was used).
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.0, 0.0),
}
VA_CIRCUMPLEX = "circumplex_from_face_probs"
FUSION_FACE_ONLY = "face_only"


class TimelineConfig(BaseModel):
    """The analysis grid and smoothing of the timeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)
    # Centred median filter over this many windows (odd; 1 = off).  Frame-level emotion
    # estimates flicker; 3 windows (1.5 s) removes single-window blips but keeps onsets.
    median_windows: int = Field(3, ge=1)
    tracks: TrackConfig = TrackConfig()


def circumplex_va(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valence and arousal (n,) from class probabilities (n, 7) via :data:`CIRCUMPLEX`."""
    points = np.asarray([CIRCUMPLEX[e] for e in S.EMOTIONS], np.float32)
    va = probs @ points
    return va[:, 0], va[:, 1]


def median_smooth(values: np.ndarray, present: np.ndarray, width: int) -> np.ndarray:
    """Centred median over ``width`` windows of (n, k) ``values``, ignoring absent windows.

    Absent windows stay absent (NaN): smoothing never invents a face that was not there.
    """
    if width <= 1 or len(values) == 0:
        return values
    half = width // 2
    masked = np.where(present[:, None], values, np.nan)
    padded = np.pad(masked, ((half, half), (0, 0)), constant_values=np.nan)
    stacked = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)
    out = np.full_like(values, np.nan)
    out[present] = np.nanmedian(stacked[present], axis=-1)
    return out


def _concat(batch: dict[str, np.ndarray], column: str, dtype: Any, width: int | None = None):
    parts = [np.asarray(v, dtype=dtype) for v in batch[column]]
    shape = (0,) if width is None else (0, width)
    parts = [p.reshape(shape[:1] + p.shape[1:]) if p.size == 0 else p for p in parts]
    return np.concatenate(parts) if parts else np.zeros(shape, dtype)


class BuildTimeline:
    """``groupby(CLIP_ID).map_groups`` function: all chunk rows of one clip in, one row out.

    Reads the chunk columns (``FRAME_TS``, ``FACE_FRAME``, ``FACE_BOX``, ``FACE_PROBS``, the
    ``VOICE_*`` windows, ``STATUS``/``ERROR``, media facts, ``STAGE_SECONDS``).  Writes one row
    with the ``CLIP_SCHEMA`` summary columns that it can know (status, coverage, shares, …) and
    ``TIMELINE``: the clip's timeline as a list of ``TIMELINE_SCHEMA`` structs.

    Tracks are linked across the whole clip; each kept track gets one row per window of the
    decoded span, with ``face_present`` false and null face columns where it is absent; a clip
    without tracks gets one row per window with a null track.  Terminal status: an upstream
    failure (``read_error``, ``decode_error``, ``partial``, …) wins, then ``no_face``, then
    ``no_audio``, else ``ok``.  Resources: 1 CPU; the input is small (no frames or crops).
    """

    def __init__(self, config: TimelineConfig, min_speech_ratio: float):
        self.config = config
        # The voice stage's definition of a speech window (VoiceFeaturesConfig): one source.
        self.min_speech_ratio = min_speech_ratio

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        started = time.perf_counter()
        order = np.argsort(batch[S.CHUNK_INDEX], kind="stable")
        batch = {k: v[order] for k, v in batch.items()}
        first = {k: v[0] for k, v in batch.items()}
        statuses = [s for s in batch[S.STATUS] if s]
        errors = [e for e in batch[S.ERROR] if e]

        frame_ts = _concat(batch, S.FRAME_TS, np.float64)
        offsets = np.cumsum([0, *(len(v) for v in batch[S.FRAME_TS])])[:-1]
        face_frame = np.concatenate(
            [np.asarray(f, np.int64) + o for f, o in zip(batch[S.FACE_FRAME], offsets,
                                                         strict=True)]
        ) if len(batch[S.FACE_FRAME]) else np.zeros(0, np.int64)
        boxes = _concat(batch, S.FACE_BOX, np.float32, 4)
        probs = _concat(batch, S.FACE_PROBS, np.float32, len(S.EMOTIONS))
        tracks = link_tracks(frame_ts, face_frame, boxes, self.config.tracks)

        decoded = [(s, e) for s, e, ts in zip(batch[S.CHUNK_START_S], batch[S.CHUNK_END_S],
                                              batch[S.FRAME_TS], strict=True) if len(ts)]
        hop = self.config.hop_s
        starts = np.concatenate([
            np.arange(np.ceil(s / hop - 1e-9), np.ceil(e / hop - 1e-9)) * hop for s, e in decoded
        ]) + 0.0 if decoded else np.zeros(0)  # + 0.0 turns ceil's -0.0 into 0.0
        duration = max((e for _, e in decoded), default=0.0)
        ends = np.minimum(starts + self.config.window_s, duration)

        voice = self._voice_by_window(batch, starts)
        n_tracks = int(tracks.max()) + 1 if len(tracks) else 0
        rows = self._timeline_rows(first, starts, ends, frame_ts, face_frame, boxes, probs,
                                   tracks, n_tracks, voice)

        participant = tracks == 0
        summary = self._summary(first, statuses, errors, n_tracks, len(frame_ts), starts,
                                face_frame[participant], rows, voice)
        summary[S.PROCESSING_S] = float(np.sum(batch[S.STAGE_SECONDS])) + (
            time.perf_counter() - started)
        table = pa.Table.from_pylist([summary])
        timeline = pa.array([rows], type=pa.list_(pa.struct(list(S.TIMELINE_SCHEMA))))
        return table.append_column(S.TIMELINE, timeline)

    def _voice_by_window(self, batch: dict[str, np.ndarray], starts: np.ndarray
                         ) -> dict[str, np.ndarray]:
        n = len(starts)
        out = {
            S.SPEECH_RATIO: np.full(n, np.nan, np.float32),
            S.PITCH_HZ: np.full(n, np.nan, np.float32),
            S.LOUDNESS_DB: np.full(n, np.nan, np.float32),
            S.MFCC_MEAN: np.full((n, S.N_MFCC), np.nan, np.float32),
        }
        if n == 0:
            return out
        window_of = {round(s / self.config.hop_s): i for i, s in enumerate(starts)}
        sources = {S.SPEECH_RATIO: S.VOICE_SPEECH_RATIO, S.PITCH_HZ: S.VOICE_PITCH_HZ,
                   S.LOUDNESS_DB: S.VOICE_LOUDNESS_DB, S.MFCC_MEAN: S.VOICE_MFCC}
        for r, voice_starts in enumerate(batch[S.VOICE_WINDOW_START_S]):
            slots = [window_of.get(round(s / self.config.hop_s)) for s in voice_starts]
            for target, source in sources.items():
                values = np.asarray(batch[source][r], np.float32)
                for j, slot in enumerate(slots):
                    if slot is not None:
                        out[target][slot] = values[j]
        return out

    def _timeline_rows(self, first, starts, ends, frame_ts, face_frame, boxes, probs, tracks,
                       n_tracks, voice) -> list[dict[str, Any]]:
        n_windows = len(starts)
        speech_ratio = voice[S.SPEECH_RATIO]
        has_voice = ~np.isnan(speech_ratio)
        speech_present = speech_ratio >= self.min_speech_ratio
        common = []
        for w in range(n_windows):
            pitch, loud = voice[S.PITCH_HZ][w], voice[S.LOUDNESS_DB][w]
            common.append({
                S.CLIP_ID: first[S.CLIP_ID], S.URI: first[S.URI], S.WINDOW_INDEX: w,
                S.WINDOW_START_S: float(starts[w]), S.WINDOW_END_S: float(ends[w]),
                S.SPEECH_PRESENT: bool(speech_present[w]) if has_voice[w] else None,
                S.SPEECH_RATIO: float(speech_ratio[w]) if has_voice[w] else None,
                S.PITCH_HZ: None if np.isnan(pitch) else float(pitch),
                S.LOUDNESS_DB: None if np.isnan(loud) else float(loud),
                S.MFCC_MEAN: (None if np.isnan(voice[S.MFCC_MEAN][w]).any()
                              else voice[S.MFCC_MEAN][w].tolist()),
            })
        if n_tracks == 0:
            return [{**c, **_absent_face(None)} for c in common]

        det_ts = frame_ts[face_frame]
        rows = []
        for track in range(n_tracks):
            mine = tracks == track
            ts, track_probs, track_boxes = det_ts[mine], probs[mine], boxes[mine]
            lo = np.searchsorted(ts, starts, side="left")
            hi = np.searchsorted(ts, ends, side="left")
            counts = hi - lo
            present = counts > 0
            mean_probs = np.zeros((n_windows, len(S.EMOTIONS)), np.float32)
            mean_boxes = np.zeros((n_windows, 4), np.float32)
            for w in np.flatnonzero(present):
                mean_probs[w] = track_probs[lo[w]:hi[w]].mean(axis=0)
                mean_boxes[w] = track_boxes[lo[w]:hi[w]].mean(axis=0)
            smoothed = median_smooth(mean_probs, present, self.config.median_windows)
            smoothed[present] /= smoothed[present].sum(axis=1, keepdims=True)
            valence, arousal = circumplex_va(np.nan_to_num(smoothed))
            for w in range(n_windows):
                if not present[w]:
                    rows.append({**common[w], **_absent_face(track)})
                    continue
                p = smoothed[w]
                rows.append({
                    **common[w], S.TRACK_ID: track, S.IS_PARTICIPANT: track == 0,
                    S.FACE_PRESENT: True, S.FACE_FRAMES: int(counts[w]),
                    S.BOX: mean_boxes[w].tolist(),
                    **{c: float(v) for c, v in zip(S.PROB_COLUMNS, p, strict=True)},
                    S.DOMINANT_EMOTION: S.EMOTIONS[int(np.argmax(p))],
                    S.VALENCE: float(valence[w]), S.AROUSAL: float(arousal[w]),
                    S.VA_SOURCE: VA_CIRCUMPLEX, S.FUSION_MODE: FUSION_FACE_ONLY,
                })
        return rows

    def _summary(self, first, statuses, errors, n_tracks, n_frames, starts, participant_frames,
                 rows, voice) -> dict[str, Any]:
        has_audio = bool(first[S.HAS_AUDIO])
        speech_ratio = voice[S.SPEECH_RATIO]
        voiced = ~np.isnan(speech_ratio)
        summary: dict[str, Any] = {c: first[c] for c in (
            S.CLIP_ID, S.URI, S.SIZE_BYTES, S.CONTAINER, S.VIDEO_CODEC, S.DURATION_S, S.FPS,
            S.WIDTH, S.HEIGHT, S.ROTATION, S.HAS_AUDIO)}
        summary[S.FRAMES_SAMPLED] = n_frames
        summary[S.WINDOWS] = len(starts)
        summary[S.FACE_TRACKS] = n_tracks
        summary[S.FACE_COVERAGE] = (len(np.unique(participant_frames)) / n_frames
                                    if n_frames else None)
        summary[S.SPEECH_COVERAGE] = (
            float(np.mean(speech_ratio[voiced] >= self.min_speech_ratio))
            if voiced.any() else None)
        dominant = [r[S.DOMINANT_EMOTION] for r in rows
                    if r[S.IS_PARTICIPANT] and r[S.FACE_PRESENT]]
        for emotion, column in zip(S.EMOTIONS, S.SHARE_COLUMNS, strict=True):
            summary[column] = dominant.count(emotion) / len(dominant) if dominant else None
        summary[S.DOMINANT_EMOTION] = (max(S.EMOTIONS, key=dominant.count) if dominant else None)
        summary[S.VA_SOURCE] = VA_CIRCUMPLEX if dominant else None

        if statuses:
            # The first upstream failure is the clip's fate; later rows only add detail.
            status = statuses[0]
        elif n_tracks == 0:
            status = S.Status.NO_FACE.value
            errors.append(f"no face found in {n_frames} sampled frames")
        elif not has_audio:
            status = S.Status.NO_AUDIO.value
            errors.append("no audio stream: voice columns are null")
        else:
            status = S.Status.OK.value
        summary[S.STATUS] = status
        summary[S.ERROR] = "; ".join(errors) or None
        return summary


def _absent_face(track: int | None) -> dict[str, Any]:
    return {
        S.TRACK_ID: track, S.IS_PARTICIPANT: (track == 0) if track is not None else None,
        S.FACE_PRESENT: False, S.FACE_FRAMES: 0, S.BOX: None,
        **dict.fromkeys(S.PROB_COLUMNS), S.DOMINANT_EMOTION: None, S.VALENCE: None,
        S.AROUSAL: None, S.VA_SOURCE: None, S.FUSION_MODE: None,
    }


def make_timeline_fn(config: TimelineConfig, min_speech_ratio: float):
    """``map_groups`` needs a named function: wrap :class:`BuildTimeline` in one."""
    builder = BuildTimeline(config, min_speech_ratio)

    def build_timeline(batch: dict[str, np.ndarray]) -> pa.Table:
        return builder(batch)

    return build_timeline
