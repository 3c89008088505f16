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
from operators.fusion.participant import (
    ParticipantConfig,
    TrackEvidence,
    TrustConfig,
    choose_participant,
    mouth_motion,
    on_screen_flags,
    smooth_scores,
    window_means,
)
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
    trust: TrustConfig = TrustConfig()


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

    Reads the chunk columns (``FRAME_TS``, ``FACE_FRAME``, ``FACE_BOX``, ``FACE_SCORE``,
    ``FACE_THUMB``, ``FACE_PROBS``, ``FACE_FEATURES``, the ``VOICE_*`` windows,
    ``STATUS``/``ERROR``, media facts, ``FRAME_WIDTH``/``FRAME_HEIGHT``, ``VIDEO_DECODER``,
    ``STAGE_SECONDS``).  Writes one row with the ``CLIP_SCHEMA`` summary columns it can know
    (status, coverage, shares, the decoder that read the frames: "" when none did, why the
    participant is who they are, …) and ``TIMELINE``: the clip's timeline as a list of
    ``TIMELINE_SCHEMA`` structs.

    Tracks are linked across the whole clip; the participant (track 0) is chosen from
    evidence (``operators.fusion.participant.choose_participant``: a pinned region,
    liveness, layout, speaking, screen time) and other faces are flagged ``on_screen`` when
    they are pictures or sit on the screen under test.  Each kept track gets one row per
    window of the decoded span (windows start every ``hop_s`` from 0 up to the last sampled
    frame; each ends ``window_s`` later or with the decoded span); a clip without tracks
    gets one row per window with a null track.

    **Who speaks.**  A window has speech when its speech ratio reaches
    ``min_speech_ratio`` and the voice is finite there.  A track ``speaking`` in it when its
    face is there, not ``on_screen``, and its mouth moves (``speaking_score``, the smoothed
    mouth motion, reaches ``trust.speaking_motion``).  Speech goes only to speaking tracks;
    speech with no speaking face is ``offscreen_speech`` and gets rows of its own
    (``track_id`` null, ``voice_only``) — in a faceless clip the null track's every window.

    **Estimates.**  ``face_p_*`` (the face model alone, mean over the window's frames) and
    ``voice_p_*`` (the voice model alone, on rows the speech is attributed to) are kept
    beside the combined ``p_*``, which is one of:

    * face only (neither ``fusion`` nor ``product``): the face's probabilities
      (``face_only``); valence/arousal from the circumplex (``circumplex_from_face_probs``).
    * ``product`` (the decision-level product rule, no weights): while the track speaks, the
      face probabilities (tempered by ``trust.speaking_face_temper``) times the voice's,
      renormalised (``fusion``); the face's alone otherwise (``face_only``), the voice's
      alone on speech rows without a face (``voice_only``); valence/arousal from the
      circumplex of those probabilities (``circumplex_from_fused_probs``).
    * ``fusion`` (a trained fusion model on both models' features, the same attribution;
      ``va_source`` ``fusion_model``).

    The combined probabilities are median-smoothed over the windows that have an estimate
    and renormalised.  ``confidence`` (:func:`confidence`) rates each estimate; below
    ``trust.min_confidence`` (``trust.min_voice_only_confidence`` for voice alone)
    ``dominant_emotion`` is null.  Windows with neither a face nor speech keep null
    categories — never a guess.  The clip's shares and ``dominant_emotion`` count the
    participant's confident windows only (the null track's in a faceless clip).
    Terminal status: an upstream failure (``read_error``, ``decode_error``, ``partial``, …)
    wins, then chunks missing from ``N_CHUNKS`` (``partial``), then ``no_face``, then
    ``no_audio``, else ``ok``.  Resources: 1 task per clip on small rows (no frames or crops).
    """

    name = "build_timeline"
    grain = Grain.CLIP
    reads = (S.CHUNK_INDEX, S.N_CHUNKS, S.STATUS, S.ERROR, S.FRAME_TS, S.FACE_FRAME,
             S.FACE_BOX, S.FACE_SCORE, S.FACE_THUMB, S.FACE_PROBS, S.CHUNK_START_S,
             S.CHUNK_END_S, S.FRAME_WIDTH, S.FRAME_HEIGHT,
             S.VOICE_WINDOW_START_S, S.VOICE_SPEECH_RATIO, S.VOICE_PITCH_HZ,
             S.VOICE_LOUDNESS_DB, S.VOICE_MFCC, S.STAGE_SECONDS, S.VIDEO_DECODER)
    replaces = True
    output_schema = S.CLIP_SUMMARY_SCHEMA
    writes = tuple(S.CLIP_SUMMARY_SCHEMA.names)

    def __init__(self, config: TimelineConfig, min_speech_ratio: float,
                 fusion_checkpoint: bytes | None = None, product: bool = False,
                 resources: StageResources | None = None,
                 participant: ParticipantConfig | None = None):
        super().__init__(resources)
        if fusion_checkpoint is not None and product:
            raise ValueError("choose a trained fusion model or the product rule, not both")
        self.config = config
        self.trust = config.trust
        self.participant = participant or ParticipantConfig()
        # The voice stage's definition of a speech window (VoiceFeaturesConfig): one source.
        self.min_speech_ratio = min_speech_ratio
        self.fusion_checkpoint = fusion_checkpoint
        self.product = product
        self.fusion: FusionModel | None = None
        if product or fusion_checkpoint is not None:
            self.reads = (*self.reads, S.VOICE_PROBS, S.VOICE_VALENCE, S.VOICE_AROUSAL)
        if fusion_checkpoint is not None:
            self.reads = (*self.reads, S.FACE_FEATURES, S.VOICE_FEATURES)

    @property
    def uses_voice(self) -> bool:
        return self.product or self.fusion_checkpoint is not None

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
            scores=_concat(batch, S.FACE_SCORE, np.float32),
            thumbs=_concat(batch, S.FACE_THUMB, np.uint8, S.FACE_THUMB_SIZE ** 2),
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
        frame_size = (max(int(w) for w in batch[S.FRAME_WIDTH]),
                      max(int(h) for h in batch[S.FRAME_HEIGHT]))
        sampled = (np.searchsorted(frame_ts, ends, side="left")
                   - np.searchsorted(frame_ts, starts, side="left"))
        grid = _Grid(starts, ends, sampled, self._speech_present(voice))
        tracks, reason = self._people(faces, grid, frame_size)

        rows = self._timeline_rows(first, grid, faces, tracks, voice)
        participant_frames = (face_frame[faces.tracks == 0] if tracks
                              else np.zeros(0, np.int64))
        summary = self._summary(first, statuses, bool(lost), errors, len(tracks),
                                len(frame_ts), starts, participant_frames, rows, voice)
        summary[S.PARTICIPANT_REASON] = reason
        # Chunks without frames say "": the first chunk that has some names the decoder.
        summary[S.VIDEO_DECODER] = next((d for d in batch[S.VIDEO_DECODER] if d), "")
        summary[S.PROCESSING_S] = float(np.sum(batch[S.STAGE_SECONDS])) + (
            time.perf_counter() - started)
        table = pa.Table.from_pylist([summary])
        timeline = pa.array([rows], type=pa.list_(pa.struct(list(S.TIMELINE_SCHEMA))))
        return table.append_column(S.TIMELINE, timeline)

    def _speech_present(self, voice: dict[str, np.ndarray]) -> np.ndarray:
        """(windows,) bool: the window has speech the voice model can speak for."""
        ratio = voice[S.SPEECH_RATIO]
        present = ~np.isnan(ratio) & (np.nan_to_num(ratio) >= self.min_speech_ratio)
        if self.uses_voice:
            present &= np.isfinite(voice[S.VOICE_PROBS]).all(axis=1)
        return present

    def _people(self, faces: _Faces, grid: _Grid, frame_size: tuple[int, int]
                ) -> tuple[list[_Track], str | None]:
        """Each track's windows and evidence; renumbers ``faces.tracks`` so the participant
        is 0 (the others keep their order) and returns the tracks in that order with the
        reason for the choice (None without faces)."""
        n_tracks = int(faces.tracks.max()) + 1 if len(faces.tracks) else 0
        if not n_tracks:
            return [], None
        width, height = frame_size
        tracks = []
        for track in range(n_tracks):
            mine = np.flatnonzero(faces.tracks == track)
            ts = faces.ts[mine]
            lo = np.searchsorted(ts, grid.starts, side="left")
            hi = np.searchsorted(ts, grid.ends, side="left")
            motion = mouth_motion(ts, faces.thumbs[mine], self.trust.max_pair_gap_s)
            score = smooth_scores(window_means(motion, lo, hi))
            moving = np.nan_to_num(score) >= self.trust.speaking_motion
            boxes = faces.boxes[mine]
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            evidence = TrackEvidence(
                detections=len(mine), median_area=float(np.median(area)),
                centre=(float(np.median(centre[:, 0])) / max(width, 1),
                        float(np.median(centre[:, 1])) / max(height, 1)),
                width_share=float(np.median(boxes[:, 2] - boxes[:, 0])) / max(width, 1),
                live=bool(np.nanmedian(score) >= self.trust.live_motion)
                if np.isfinite(score).any() else False,
                speaking_windows=int(np.sum(moving & grid.speech)))
            tracks.append(_Track(mine, lo, hi, score, moving, evidence))
        participant, reason = choose_participant([t.evidence for t in tracks],
                                                 self.participant)
        order = [participant, *(t for t in range(n_tracks) if t != participant)]
        on_screen = on_screen_flags([t.evidence for t in tracks], participant)
        renumber = np.full(n_tracks + 1, -1, np.int32)  # index -1 (dropped) stays -1
        for new, old in enumerate(order):
            renumber[old] = new
            tracks[old].on_screen = on_screen[old]
        faces.tracks = renumber[faces.tracks]
        return [tracks[old] for old in order], reason

    def _voice_by_window(self, batch: dict[str, np.ndarray], starts: np.ndarray
                         ) -> dict[str, np.ndarray]:
        """The chunk rows' per-window voice columns, placed on the clip's window grid."""
        n = len(starts)
        sources = {S.SPEECH_RATIO: S.VOICE_SPEECH_RATIO, S.PITCH_HZ: S.VOICE_PITCH_HZ,
                   S.LOUDNESS_DB: S.VOICE_LOUDNESS_DB, S.MFCC_MEAN: S.VOICE_MFCC}
        widths = {S.MFCC_MEAN: S.N_MFCC}
        if self.uses_voice:
            sources.update({c: c for c in (S.VOICE_PROBS, S.VOICE_VALENCE, S.VOICE_AROUSAL)})
            widths[S.VOICE_PROBS] = len(S.EMOTIONS)
        if self.fusion is not None:
            sources[S.VOICE_FEATURES] = S.VOICE_FEATURES
            widths[S.VOICE_FEATURES] = self.fusion.input_dims[1]
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

    def _timeline_rows(self, first, grid: _Grid, faces: _Faces, tracks: list[_Track],
                       voice) -> list[dict[str, Any]]:
        n_windows = len(grid.starts)
        speech_ratio = voice[S.SPEECH_RATIO]
        has_voice = ~np.isnan(speech_ratio)
        speaking = np.zeros((len(tracks), n_windows), bool)
        for k, track in enumerate(tracks):
            if not track.on_screen:
                speaking[k] = track.moving & grid.speech & (track.hi > track.lo)
        offscreen = grid.speech & ~speaking.any(axis=0)
        common = []
        for w in range(n_windows):
            pitch, loud = voice[S.PITCH_HZ][w], voice[S.LOUDNESS_DB][w]
            common.append({
                S.CLIP_ID: first[S.CLIP_ID], S.URI: first[S.URI], S.WINDOW_INDEX: w,
                S.WINDOW_START_S: float(grid.starts[w]), S.WINDOW_END_S: float(grid.ends[w]),
                S.SPEECH_PRESENT: bool(grid.speech[w]) if has_voice[w] else None,
                S.SPEECH_RATIO: float(speech_ratio[w]) if has_voice[w] else None,
                S.PITCH_HZ: None if np.isnan(pitch) else float(pitch),
                S.LOUDNESS_DB: None if np.isnan(loud) else float(loud),
                S.MFCC_MEAN: (None if np.isnan(voice[S.MFCC_MEAN][w]).any()
                              else voice[S.MFCC_MEAN][w].tolist()),
                S.OFFSCREEN_SPEECH: bool(offscreen[w]) if has_voice[w] else None,
            })
        rows = []
        for k, track in enumerate(tracks):
            present = track.hi > track.lo
            view = _View(
                present=present, heard=speaking[k],
                face=_window_mean_rows(faces.probs[track.detections], track.lo, track.hi),
                face_quality=_face_quality(faces.scores[track.detections], track.lo,
                                           track.hi, grid.sampled))
            est = self._estimate(view, voice, faces, track)
            mean_boxes = _window_mean_rows(faces.boxes[track.detections], track.lo, track.hi)
            for w in range(n_windows):
                row = {**common[w], **_absent_face(k, track.on_screen)}
                if present[w]:
                    row.update({S.FACE_PRESENT: True, S.FACE_FRAMES: int(track.hi[w] -
                                                                         track.lo[w]),
                                S.BOX: mean_boxes[w].tolist(),
                                S.SPEAKING: bool(speaking[k, w]),
                                S.SPEAKING_SCORE: _float(track.score[w])})
                    row.update(_probs(S.FACE_PROB_COLUMNS, view.face[w]))
                    fv, fa = circumplex_va(view.face[w][None])
                    row.update({S.FACE_VALENCE: float(fv[0]), S.FACE_AROUSAL: float(fa[0])})
                rows.append(self._fill(row, est, view, voice, w))
        # Speech nobody on screen is seen saying: rows of its own, never a face's.
        voice_rows = range(n_windows) if not tracks else np.flatnonzero(offscreen)
        if len(voice_rows):
            n = n_windows
            view = _View(present=np.zeros(n, bool), heard=offscreen.copy(),
                         face=np.zeros((n, len(S.EMOTIONS)), np.float32),
                         face_quality=np.zeros(n, np.float32))
            est = self._estimate(view, voice, faces, None)
            for w in voice_rows:
                rows.append(self._fill({**common[w], **_absent_face(None, None)}, est, view,
                                       voice, w))
        return rows

    def _fill(self, row: dict[str, Any], est: _Estimate, view: _View, voice, w: int
              ) -> dict[str, Any]:
        """``row`` with window ``w`` of the estimate, its confidence and the voice's own
        output where the speech is attributed to this row."""
        if view.heard[w] and self.uses_voice:
            row.update(_probs(S.VOICE_PROB_COLUMNS, voice[S.VOICE_PROBS][w]))
            row[S.VOICE_VALENCE] = _float(voice[S.VOICE_VALENCE][w])
            row[S.VOICE_AROUSAL] = _float(voice[S.VOICE_AROUSAL][w])
        if est.mode[w] is None:
            return row
        p = est.probs[w]
        conf = confidence(
            p, face=view.face[w] if view.present[w] else None,
            voice=voice[S.VOICE_PROBS][w] if view.heard[w] and self.uses_voice else None,
            face_quality=float(view.face_quality[w]),
            # Half a window of speech is a full utterance's worth of evidence.
            voice_quality=min(1.0, 2 * float(np.nan_to_num(voice[S.SPEECH_RATIO][w]))))
        threshold = (self.trust.min_voice_only_confidence if est.mode[w] == FUSION_VOICE_ONLY
                     else self.trust.min_confidence)
        row.update({
            **_probs(S.PROB_COLUMNS, p),
            S.DOMINANT_EMOTION: S.EMOTIONS[int(np.argmax(p))] if conf >= threshold else None,
            S.VALENCE: float(est.valence[w]), S.AROUSAL: float(est.arousal[w]),
            S.VA_SOURCE: est.va_source, S.FUSION_MODE: est.mode[w], S.CONFIDENCE: conf,
        })
        return row

    def _estimate(self, view: _View, voice, faces: _Faces, track: _Track | None) -> _Estimate:
        if self.fusion is not None:
            return self._fused(view, voice, faces, track)
        if self.product:
            return self._product(view, voice)
        return self._face_only(view)

    def _face_only(self, view: _View) -> _Estimate:
        smoothed = self._smooth_probs(view.face, view.present)
        valence, arousal = circumplex_va(np.nan_to_num(smoothed))
        modes = [FUSION_FACE_ONLY if p else None for p in view.present]
        return _Estimate(smoothed, valence, arousal, modes, VA_CIRCUMPLEX)

    def _product(self, view: _View, voice) -> _Estimate:
        """The decision-level product rule (see the class docstring)."""
        present, heard = view.present, view.heard
        # While the face speaks its expression is less readable: temper it (1 = as is).
        temper = np.where(heard, self.trust.speaking_face_temper, 1.0)[:, None]
        log_p = (np.where(present[:, None], temper * np.log(np.maximum(view.face, MIN_PROB)),
                          0.0)
                 + np.where(heard[:, None], np.log(np.maximum(
                     np.nan_to_num(voice[S.VOICE_PROBS]), MIN_PROB)), 0.0))
        fused = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        fused = (fused / fused.sum(axis=1, keepdims=True)).astype(np.float32)
        estimated = present | heard
        smoothed = self._smooth_probs(fused, estimated)
        valence, arousal = circumplex_va(np.nan_to_num(smoothed))
        modes = [FUSION_BOTH if f and v else FUSION_FACE_ONLY if f else
                 FUSION_VOICE_ONLY if v else None for f, v in zip(present, heard, strict=True)]
        return _Estimate(smoothed, valence, arousal, modes, VA_PRODUCT)

    def _fused(self, view: _View, voice, faces: _Faces, track: _Track | None) -> _Estimate:
        present = view.present
        n_windows = len(present)
        face_dim = self.fusion.input_dims[0]
        if track is None:
            feats = np.zeros((n_windows, 1, face_dim), np.float32)
            mask = np.zeros((n_windows, 1), bool)
        else:
            lo, hi = track.lo, track.hi
            per_window = max(1, int((hi - lo).max(initial=0)))
            feats = np.zeros((n_windows, per_window, face_dim), np.float32)
            mask = np.zeros((n_windows, per_window), bool)
            track_feats = faces.features[track.detections]
            for w in np.flatnonzero(present):
                n = hi[w] - lo[w]
                feats[w, :n] = track_feats[lo[w]:hi[w]]
                mask[w, :n] = True
        voice_feats = voice[S.VOICE_FEATURES]
        voice_mask = view.heard & np.isfinite(voice_feats).all(axis=1)
        pred = fusion_model.predict(
            self.fusion, feats, mask, np.nan_to_num(voice_feats)[:, None, :], voice_mask,
            np.where(voice_mask, np.nan_to_num(voice[S.SPEECH_RATIO]), 0.0).astype(np.float32))
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
        # The participant's confident windows (the voice's, in a faceless clip): never the
        # other faces' nor the off-screen speech beside a participant.
        subject = 0 if n_tracks else None
        dominant = [r[S.DOMINANT_EMOTION] for r in rows
                    if r[S.TRACK_ID] == subject and r[S.DOMINANT_EMOTION] is not None]
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


def confidence(probs: np.ndarray, *, face: np.ndarray | None, voice: np.ndarray | None,
               face_quality: float, voice_quality: float) -> float:
    """How far to trust one window's estimate, in [0, 1]: certainty × evidence × agreement.

    * certainty: 1 - entropy(``probs``) / ln 7 (0 for a uniform guess, 1 for one class);
    * evidence: the face's quality (mean detector score × share of the window's sampled
      frames where the face was found) when only the face speaks for the window, the
      voice's (twice the window's speech ratio, at most 1) when only the voice does, their
      mean when both do;
    * agreement, when both do: 1 - Jensen-Shannon divergence(face, voice) / ln 2 (1 when
      they say the same, 0 when they share nothing).
    """
    p = np.clip(np.asarray(probs, np.float64), MIN_PROB, 1.0)
    p = p / p.sum()
    certainty = 1.0 + float(np.sum(p * np.log(p))) / np.log(len(p))
    if face is not None and voice is not None:
        evidence = (face_quality + voice_quality) / 2
        agreement = 1.0 - _js_divergence(face, voice) / np.log(2)
    else:
        evidence = face_quality if face is not None else voice_quality
        agreement = 1.0
    return float(np.clip(certainty * evidence * agreement, 0.0, 1.0))


def _js_divergence(a: np.ndarray, b: np.ndarray) -> float:
    a = np.clip(np.asarray(a, np.float64), MIN_PROB, 1.0)
    b = np.clip(np.asarray(b, np.float64), MIN_PROB, 1.0)
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2
    return float(0.5 * np.sum(a * np.log(a / m)) + 0.5 * np.sum(b * np.log(b / m)))


def _window_mean_rows(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(windows, k) mean of ``values[lo[w]:hi[w]]`` (zeros where a window has none)."""
    out = np.zeros((len(lo), values.shape[1]), np.float32)
    for w in np.flatnonzero(hi > lo):
        out[w] = values[lo[w]:hi[w]].mean(axis=0)
    return out


def _face_quality(scores: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  sampled: np.ndarray) -> np.ndarray:
    """(windows,) mean detector score × share of the window's sampled frames with the face."""
    out = np.zeros(len(lo), np.float32)
    for w in np.flatnonzero(hi > lo):
        out[w] = scores[lo[w]:hi[w]].mean() * min(1.0, (hi[w] - lo[w]) / max(sampled[w], 1))
    return out


def _probs(columns: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {c: float(v) for c, v in zip(columns, values, strict=True)}


def _float(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


@dataclass
class _Faces:
    """A clip's detections, flat: time, box, score, thumbnail, face-model outputs, track."""

    ts: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    thumbs: np.ndarray
    probs: np.ndarray
    features: np.ndarray | None
    tracks: np.ndarray


@dataclass
class _Grid:
    """The clip's windows: bounds, sampled frames in each, and which have speech."""

    starts: np.ndarray
    ends: np.ndarray
    sampled: np.ndarray
    speech: np.ndarray


@dataclass
class _Track:
    """One face track: its detections (indices into ``_Faces``, by time), each window's
    slice of them, mouth-motion score, whether the mouth moves, and its evidence."""

    detections: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    score: np.ndarray
    moving: np.ndarray
    evidence: TrackEvidence
    on_screen: bool = False


@dataclass
class _View:
    """What speaks for one row series per window: the face (present, its mean
    probabilities and quality) and the speech attributed to it (``heard``)."""

    present: np.ndarray
    heard: np.ndarray
    face: np.ndarray
    face_quality: np.ndarray


@dataclass
class _Estimate:
    """Per-window categories and valence/arousal of one track (mode None = no estimate)."""

    probs: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    mode: list[str | None]
    va_source: str


def _absent_face(track: int | None, on_screen: bool | None) -> dict[str, Any]:
    return {
        S.TRACK_ID: track, S.IS_PARTICIPANT: (track == 0) if track is not None else None,
        S.FACE_PRESENT: False, S.FACE_FRAMES: 0, S.BOX: None,
        **dict.fromkeys(S.PROB_COLUMNS), S.DOMINANT_EMOTION: None, S.VALENCE: None,
        S.AROUSAL: None, S.VA_SOURCE: None, S.FUSION_MODE: None,
        **dict.fromkeys((*S.FACE_PROB_COLUMNS, *S.VOICE_PROB_COLUMNS)),
        S.FACE_VALENCE: None, S.FACE_AROUSAL: None, S.VOICE_VALENCE: None,
        S.VOICE_AROUSAL: None, S.CONFIDENCE: None, S.SPEAKING: None,
        S.SPEAKING_SCORE: None, S.ON_SCREEN: on_screen,
    }
