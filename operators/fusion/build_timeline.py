"""Timeline: per clip, face tracks × analysis windows with emotions, valence/arousal and voice."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from models import fusion as fusion_model
from models.emotions import CIRCUMPLEX, MIN_PROB
from models.fusion import FusionModel
from operators import schema as S
from operators.resources import StageResources
from operators.step import Grain, Step, load_from_bytes
from operators.vision.track_faces import TrackConfig, link_tracks

logger = logging.getLogger(__name__)

VA_CIRCUMPLEX = "circumplex_from_face_probs"
# The product rule's rows: the circumplex mapping of the row's probabilities, i.e. of the
# face × voice product on `fusion` rows, the face's on `face_only`, the voice's on `voice_only`.
VA_PRODUCT = "circumplex_from_fused_probs"
VA_FUSION = "fusion_model"
FUSION_BOTH, FUSION_FACE_ONLY, FUSION_VOICE_ONLY = S.FUSION_MODES


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
    """One array from a column's per-row arrays, which arrive as flat lists (see
    ``operators.batches.to_list_columns``): ``width`` restores the trailing dimension."""
    shape = (-1,) if width is None else (-1, width)
    parts = [np.asarray(v, dtype=dtype).reshape(shape) for v in batch[column]]
    return np.concatenate(parts) if parts else np.zeros((0, *shape[1:]), dtype)


class BuildTimeline(Step):
    """All chunk rows of one clip in (``groupby(CLIP_ID)``), one clip row out.

    Reads the chunk columns (``FRAME_TS``, ``FACE_FRAME``, ``FACE_BOX``, ``FACE_PROBS``,
    ``FACE_FEATURES``, the ``VOICE_*`` windows, ``STATUS``/``ERROR``, media facts,
    ``VIDEO_DECODER``, ``STAGE_SECONDS``).  Writes one row with the ``CLIP_SCHEMA`` summary
    columns it can know (status, coverage, shares, the decoder that read the frames: ""
    when none did, …) and ``TIMELINE``: the clip's timeline as a list of
    ``TIMELINE_SCHEMA`` structs.

    Tracks are linked across the whole clip; each kept track gets one row per window of the
    decoded span (windows start every ``hop_s`` from 0 up to the last sampled frame; each ends
    ``window_s`` later or with the decoded span); a clip without tracks gets one row per
    window with a null track.  Three ways to decide categories and valence/arousal:

    * face only (neither ``fusion`` nor ``product``): the face model's probabilities, mean over
      the window's frames of the track (``fusion_mode`` ``face_only``); valence/arousal from
      the circumplex mapping (``va_source`` ``circumplex_from_face_probs``).
    * ``product`` (the decision-level product rule, no weights; also reads ``VOICE_PROBS``):
      where the track's face is present and the window has speech, the face probabilities
      (mean over frames) times the voice model's probabilities, renormalised (``fusion``);
      the face's alone without speech (``face_only``), the voice's alone without a face
      (``voice_only``); valence/arousal from the circumplex mapping of those probabilities
      (``va_source`` ``circumplex_from_fused_probs``).
    * ``fusion`` (a trained fusion model; also reads ``FACE_FEATURES``, ``VOICE_FEATURES``):
      the model combines the track's frame features with the window's voice embedding where
      speech is present (``fusion``, ``face_only`` or ``voice_only``; ``va_source``
      ``fusion_model``).

    A window "has speech" for a track when its speech ratio reaches ``min_speech_ratio``,
    the voice model's output is finite there, and the track is the participant (track 0) or
    the null track of a faceless clip: voice is attributed to them only.  The probabilities
    are median-smoothed over the windows that have an estimate and renormalised, the same
    in all three ways.  Windows with neither a
    face nor speech keep null categories — never a guess.  Terminal status: an upstream
    failure (``read_error``, ``decode_error``, ``partial``, …) wins, then chunks missing from
    ``N_CHUNKS`` (``partial``), then ``no_face``, then ``no_audio``, else ``ok``.
    Resources: 1 task per clip on small rows (no frames or crops).
    """

    name = "build_timeline"
    grain = Grain.CLIP
    reads = (S.CHUNK_INDEX, S.N_CHUNKS, S.STATUS, S.ERROR, S.FRAME_TS, S.FACE_FRAME,
             S.FACE_BOX, S.FACE_PROBS, S.CHUNK_START_S, S.CHUNK_END_S,
             S.VOICE_WINDOW_START_S, S.VOICE_SPEECH_RATIO, S.VOICE_PITCH_HZ,
             S.VOICE_LOUDNESS_DB, S.VOICE_MFCC, S.STAGE_SECONDS, S.VIDEO_DECODER)
    replaces = True
    output_schema = S.CLIP_SUMMARY_SCHEMA
    writes = tuple(S.CLIP_SUMMARY_SCHEMA.names)

    def __init__(self, config: TimelineConfig, min_speech_ratio: float,
                 fusion_checkpoint: bytes | None = None, product: bool = False,
                 resources: StageResources | None = None):
        super().__init__(resources)
        if fusion_checkpoint is not None and product:
            raise ValueError("choose a trained fusion model or the product rule, not both")
        self.config = config
        # The voice stage's definition of a speech window (VoiceFeaturesConfig): one source.
        self.min_speech_ratio = min_speech_ratio
        self.fusion_checkpoint = fusion_checkpoint
        self.product = product
        self.fusion: FusionModel | None = None
        if product or fusion_checkpoint is not None:
            self.reads = (*self.reads, S.VOICE_PROBS)
        if fusion_checkpoint is not None:
            self.reads = (*self.reads, S.FACE_FEATURES, S.VOICE_FEATURES)

    def setup(self) -> None:
        if self.fusion_checkpoint is not None:
            self.fusion = load_from_bytes(fusion_model.load, self.fusion_checkpoint)

    def process(self, batch: dict[str, np.ndarray]) -> pa.Table:
        started = time.perf_counter()
        order = np.argsort(batch[S.CHUNK_INDEX], kind="stable")
        batch = {k: v[order] for k, v in batch.items()}
        first = {k: v[0] for k, v in batch.items()}
        statuses = [s for s in batch[S.STATUS] if s]
        errors = [e for e in batch[S.ERROR] if e]
        lost = sorted(set(range(int(first[S.N_CHUNKS]))) - set(batch[S.CHUNK_INDEX].tolist()))
        if lost and not statuses:
            errors.append(f"chunk(s) {lost} of {int(first[S.N_CHUNKS])} lost after repeated "
                          "worker failures; the timeline has gaps there")

        frame_ts = _concat(batch, S.FRAME_TS, np.float64)
        offsets = np.cumsum([0, *(len(v) for v in batch[S.FRAME_TS])])[:-1]
        face_frame = np.concatenate(
            [np.asarray(f, np.int64) + o for f, o in zip(batch[S.FACE_FRAME], offsets,
                                                         strict=True)]
        ) if len(batch[S.FACE_FRAME]) else np.zeros(0, np.int64)
        faces = _Faces(
            ts=frame_ts[face_frame],
            boxes=_concat(batch, S.FACE_BOX, np.float32, 4),
            probs=_concat(batch, S.FACE_PROBS, np.float32, len(S.EMOTIONS)),
            features=(_concat(batch, S.FACE_FEATURES, np.float32,
                              self.fusion.input_dims[0]) if self.fusion else None),
            tracks=np.zeros(0, np.int32),
        )
        faces.tracks = link_tracks(frame_ts, face_frame, faces.boxes, self.config.tracks)

        decoded = [(s, e) for s, e, ts in zip(batch[S.CHUNK_START_S], batch[S.CHUNK_END_S],
                                              batch[S.FRAME_TS], strict=True) if len(ts)]
        hop = self.config.hop_s
        starts = np.concatenate([
            np.arange(np.ceil(s / hop - 1e-9), np.ceil(e / hop - 1e-9)) * hop for s, e in decoded
        ]) + 0.0 if decoded else np.zeros(0)  # + 0.0 turns ceil's -0.0 into 0.0
        # The timeline ends with the window holding the last sampled frame: a tail shorter
        # than the sampling interval (a 0.52 s clip's [0.5, 0.52] s) would be a window
        # without a picture.  Its audio is not lost: the window before reaches to the end.
        if len(frame_ts):
            starts = starts[starts <= frame_ts.max() + 1e-9]
        duration = max((e for _, e in decoded), default=0.0)
        ends = np.minimum(starts + self.config.window_s, duration)

        voice = self._voice_by_window(batch, starts)
        n_tracks = int(faces.tracks.max()) + 1 if len(faces.tracks) else 0
        rows = self._timeline_rows(first, starts, ends, faces, n_tracks, voice)

        summary = self._summary(first, statuses, bool(lost), errors, n_tracks, len(frame_ts),
                                starts, face_frame[faces.tracks == 0], rows, voice)
        # Chunks without frames say "": the first chunk that has some names the decoder.
        summary[S.VIDEO_DECODER] = next((d for d in batch[S.VIDEO_DECODER] if d), "")
        summary[S.PROCESSING_S] = float(np.sum(batch[S.STAGE_SECONDS])) + (
            time.perf_counter() - started)
        table = pa.Table.from_pylist([summary])
        timeline = pa.array([rows], type=pa.list_(pa.struct(list(S.TIMELINE_SCHEMA))))
        return table.append_column(S.TIMELINE, timeline)

    def _voice_by_window(self, batch: dict[str, np.ndarray], starts: np.ndarray
                         ) -> dict[str, np.ndarray]:
        """The chunk rows' per-window voice columns, placed on the clip's window grid."""
        n = len(starts)
        sources = {S.SPEECH_RATIO: S.VOICE_SPEECH_RATIO, S.PITCH_HZ: S.VOICE_PITCH_HZ,
                   S.LOUDNESS_DB: S.VOICE_LOUDNESS_DB, S.MFCC_MEAN: S.VOICE_MFCC}
        widths = {S.MFCC_MEAN: S.N_MFCC}
        if self.fusion is not None:
            sources.update({c: c for c in (S.VOICE_PROBS, S.VOICE_FEATURES)})
            widths.update({S.VOICE_PROBS: len(S.EMOTIONS),
                           S.VOICE_FEATURES: self.fusion.input_dims[1]})
        elif self.product:
            sources[S.VOICE_PROBS] = S.VOICE_PROBS
            widths[S.VOICE_PROBS] = len(S.EMOTIONS)
        out: dict[str, np.ndarray] = {}
        window_of = {round(s / self.config.hop_s): i for i, s in enumerate(starts)}
        for target, source in sources.items():
            # Rows arrive as flat lists (see operators.batches.to_list_columns).
            shape = (-1, widths[target]) if target in widths else (-1,)
            out[target] = np.full((n, *shape[1:]), np.nan, np.float32)
            for voice_starts, values in zip(batch[S.VOICE_WINDOW_START_S], batch[source],
                                            strict=True):
                values = np.asarray(values, np.float32).reshape(shape)
                for j, start in enumerate(voice_starts):
                    slot = window_of.get(round(start / self.config.hop_s))
                    if slot is not None:
                        out[target][slot] = values[j]
        return out

    def _timeline_rows(self, first, starts, ends, faces: _Faces, n_tracks: int,
                       voice) -> list[dict[str, Any]]:
        n_windows = len(starts)
        speech_ratio = voice[S.SPEECH_RATIO]
        has_voice = ~np.isnan(speech_ratio)
        speech_present = has_voice & (np.nan_to_num(speech_ratio) >= self.min_speech_ratio)
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
        rows = []
        # A faceless clip still has one "track": the voice, with a null track id.
        for track in (range(n_tracks) if n_tracks else [None]):
            mine = faces.tracks == track if track is not None else np.zeros(0, bool)
            ts = faces.ts[mine] if track is not None else np.zeros(0)
            lo = np.searchsorted(ts, starts, side="left")
            hi = np.searchsorted(ts, ends, side="left")
            counts = hi - lo
            present = counts > 0
            mean_boxes = np.zeros((n_windows, 4), np.float32)
            for w in np.flatnonzero(present):
                mean_boxes[w] = faces.boxes[mine][lo[w]:hi[w]].mean(axis=0)
            speaks = speech_present & (track in (0, None))
            if self.fusion is not None:
                est = self._fused(faces, mine, lo, hi, present, speaks, speech_ratio, voice)
            elif self.product:
                est = self._product(faces.probs[mine], lo, hi, present, speaks, voice)
            else:
                est = self._face_only(faces.probs[mine], lo, hi, present)
            for w in range(n_windows):
                row = {**common[w], **_absent_face(track)}
                if present[w]:
                    row.update({S.FACE_PRESENT: True, S.FACE_FRAMES: int(counts[w]),
                                S.BOX: mean_boxes[w].tolist()})
                if est.mode[w] is not None:
                    p = est.probs[w]
                    row.update({
                        **{c: float(v) for c, v in zip(S.PROB_COLUMNS, p, strict=True)},
                        S.DOMINANT_EMOTION: S.EMOTIONS[int(np.argmax(p))],
                        S.VALENCE: float(est.valence[w]), S.AROUSAL: float(est.arousal[w]),
                        S.VA_SOURCE: est.va_source, S.FUSION_MODE: est.mode[w],
                    })
                rows.append(row)
        return rows

    def _face_only(self, probs: np.ndarray, lo, hi, present) -> _Estimate:
        n_windows = len(present)
        mean_probs = np.zeros((n_windows, len(S.EMOTIONS)), np.float32)
        for w in np.flatnonzero(present):
            mean_probs[w] = probs[lo[w]:hi[w]].mean(axis=0)
        smoothed = self._smooth_probs(mean_probs, present)
        valence, arousal = circumplex_va(np.nan_to_num(smoothed))
        modes = [FUSION_FACE_ONLY if p else None for p in present]
        return _Estimate(smoothed, valence, arousal, modes, VA_CIRCUMPLEX)

    def _product(self, probs: np.ndarray, lo, hi, present, speaks, voice) -> _Estimate:
        """The decision-level product rule (see the class docstring)."""
        n_windows = len(present)
        face = np.zeros((n_windows, len(S.EMOTIONS)), np.float32)
        for w in np.flatnonzero(present):
            face[w] = probs[lo[w]:hi[w]].mean(axis=0)
        voice_probs = voice[S.VOICE_PROBS]
        heard = speaks & np.isfinite(voice_probs).all(axis=1)
        log_p = (np.where(present[:, None], np.log(np.maximum(face, MIN_PROB)), 0.0)
                 + np.where(heard[:, None], np.log(np.maximum(np.nan_to_num(voice_probs),
                                                               MIN_PROB)), 0.0))
        fused = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        fused = (fused / fused.sum(axis=1, keepdims=True)).astype(np.float32)
        estimated = present | heard
        smoothed = self._smooth_probs(fused, estimated)
        valence, arousal = circumplex_va(np.nan_to_num(smoothed))
        modes = [FUSION_BOTH if f and v else FUSION_FACE_ONLY if f else
                 FUSION_VOICE_ONLY if v else None for f, v in zip(present, heard, strict=True)]
        return _Estimate(smoothed, valence, arousal, modes, VA_PRODUCT)

    def _fused(self, faces: _Faces, mine, lo, hi, present, speaks, speech_ratio, voice
               ) -> _Estimate:
        n_windows = len(present)
        per_window = max(1, int((hi - lo).max(initial=0)))
        face_dim = self.fusion.input_dims[0]
        feats = np.zeros((n_windows, per_window, face_dim), np.float32)
        mask = np.zeros((n_windows, per_window), bool)
        track_feats = faces.features[mine]
        for w in np.flatnonzero(present):
            n = hi[w] - lo[w]
            feats[w, :n] = track_feats[lo[w]:hi[w]]
            mask[w, :n] = True
        voice_feats = voice[S.VOICE_FEATURES]
        voice_mask = speaks & np.isfinite(voice_feats).all(axis=1)
        pred = fusion_model.predict(
            self.fusion, feats, mask, np.nan_to_num(voice_feats)[:, None, :], voice_mask,
            np.where(voice_mask, np.nan_to_num(speech_ratio), 0.0).astype(np.float32))
        predicted = pred.fusion_mode != "none"
        smoothed = self._smooth_probs(pred.probs, predicted)
        va = median_smooth(np.stack([pred.valence, pred.arousal], axis=1), predicted,
                           self.config.median_windows)
        modes = [str(m) if ok else None for m, ok in zip(pred.fusion_mode, predicted,
                                                         strict=True)]
        return _Estimate(smoothed, va[:, 0], va[:, 1], modes, VA_FUSION)

    def _smooth_probs(self, probs: np.ndarray, present: np.ndarray) -> np.ndarray:
        smoothed = median_smooth(probs, present, self.config.median_windows)
        smoothed[present] /= smoothed[present].sum(axis=1, keepdims=True)
        return smoothed

    def _summary(self, first, statuses, chunks_lost, errors, n_tracks, n_frames, starts,
                 participant_frames, rows, voice) -> dict[str, Any]:
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
        # The participant's windows (or the voice's, in a faceless clip) with a category.
        dominant = [r[S.DOMINANT_EMOTION] for r in rows
                    if r[S.TRACK_ID] in (0, None) and r[S.DOMINANT_EMOTION] is not None]
        for emotion, column in zip(S.EMOTIONS, S.SHARE_COLUMNS, strict=True):
            summary[column] = dominant.count(emotion) / len(dominant) if dominant else None
        summary[S.DOMINANT_EMOTION] = (max(S.EMOTIONS, key=dominant.count) if dominant else None)
        sources = {r[S.VA_SOURCE] for r in rows if r[S.VA_SOURCE]}
        summary[S.VA_SOURCE] = sources.pop() if sources else None

        status = S.decide_status(upstream=statuses, chunks_lost=chunks_lost,
                                 face_tracks=n_tracks, has_audio=has_audio)
        if status is S.Status.NO_FACE:
            errors.append(f"no face found in {n_frames} sampled frames")
        elif status is S.Status.NO_AUDIO:
            errors.append("no audio stream: voice columns are null")
        summary[S.STATUS] = status.value
        summary[S.ERROR] = "; ".join(errors) or None
        return summary


@dataclass
class _Faces:
    """A clip's detections, flat: time, box, face-model outputs and track of each."""

    ts: np.ndarray
    boxes: np.ndarray
    probs: np.ndarray
    features: np.ndarray | None
    tracks: np.ndarray


@dataclass
class _Estimate:
    """Per-window categories and valence/arousal of one track (mode None = no estimate)."""

    probs: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    mode: list[str | None]
    va_source: str


def _absent_face(track: int | None) -> dict[str, Any]:
    return {
        S.TRACK_ID: track, S.IS_PARTICIPANT: (track == 0) if track is not None else None,
        S.FACE_PRESENT: False, S.FACE_FRAMES: 0, S.BOX: None,
        **dict.fromkeys(S.PROB_COLUMNS), S.DOMINANT_EMOTION: None, S.VALENCE: None,
        S.AROUSAL: None, S.VA_SOURCE: None, S.FUSION_MODE: None,
    }
