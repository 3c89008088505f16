"""Post-processing of continuous valence/arousal predictions, fitted on validation data.

The chain of the winning systems of the AVEC continuous-affect challenges (e.g. He et al.,
AVEC 2015; Brady et al., AVEC 2016; Huang et al., AVEC 2017), applied per clip in this order:

1. **median filter** over ``median_window`` windows (centred, edges padded with the edge
   value): removes single-window spikes that the labels, smoothed by the annotators, lack;
2. **bias centring**: subtract the mean prediction and add the mean training label;
3. **scaling**: stretch around the mean so the predictions' std matches the labels' std
   (regressors under-predict variance, and CCC punishes that);
4. **time shift** by ``shift`` windows: annotators react a few seconds late, so labels lag
   behind the expression; ``shift > 0`` delays the predictions, ``shift < 0`` advances them
   (the vacated windows repeat the edge value).

Unlike the challenge systems, which used the statistics of the test partition's predictions,
the means and stds are fixed on the fitting data and stored in the :class:`PostprocessConfig`,
so a clip's output does not depend on which other clips are processed with it.

Each dimension (valence, arousal) gets its own config.  Series are 1-D numpy arrays, one per
clip (or a single array for one clip); filters and shifts never cross clip boundaries, and
CCC is computed over the concatenation of all clips, as in AVEC.  Values must be finite:
apply this to the model's raw outputs, before windows without a modality are nulled.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

logger = logging.getLogger(__name__)

Series = np.ndarray | Sequence[np.ndarray]
"""One clip's 1-D series, or a sequence of them (one per clip)."""


@dataclass(frozen=True)
class PostprocessConfig:
    """Which steps run, with their fitted parameters; the default changes nothing."""

    median_window: int = 1  # odd number of windows; 1 = off
    centre: bool = False
    scale: bool = False
    shift: int = 0  # windows; 0 = off
    # Statistics of the fitting data, used by centring and scaling.
    pred_mean: float = 0.0  # of the (median-filtered) predictions
    pred_std: float = 1.0
    label_mean: float = 0.0  # of the training labels
    label_std: float = 1.0  # of the validation labels

    def __post_init__(self) -> None:
        if self.median_window < 1 or self.median_window % 2 == 0:
            raise ValueError(f"median_window must be an odd number >= 1, got {self.median_window}")
        if not self.pred_std > 0 or not self.label_std >= 0:
            raise ValueError(f"need pred_std > 0 and label_std >= 0, got {self.pred_std}, "
                             f"{self.label_std}")


@dataclass(frozen=True)
class PostprocessCandidates:
    """The parameter values :func:`fit_postprocess` tries for each step (first = preferred on
    ties).  Default shifts cover ±4 s at a 0.5 s hop: reported annotation delays are 2–4 s."""

    median_windows: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 15)
    centre: tuple[bool, ...] = (False, True)
    scale: tuple[bool, ...] = (False, True)
    shifts: tuple[int, ...] = tuple(range(0, 9)) + tuple(range(-1, -9, -1))


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two equally long 1-D series.

    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)`` with population moments; 1 for
    identical series (constant ones included).  Raises ValueError for empty, unequal or
    non-finite input.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
        raise ValueError(f"ccc needs two non-empty 1-D series of equal length, got {x.shape}, "
                         f"{y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("ccc needs finite values")
    mean_x, mean_y = x.mean(), y.mean()
    covariance = np.mean((x - mean_x) * (y - mean_y))
    denominator = x.var() + y.var() + (mean_x - mean_y) ** 2
    # Zero only when both series are the same constant.
    return 1.0 if denominator == 0 else float(2 * covariance / denominator)


def _clips(series: Series, name: str) -> list[np.ndarray]:
    clips = [series] if isinstance(series, np.ndarray) else list(series)
    clips = [np.asarray(c, np.float64) for c in clips]
    for clip in clips:
        if clip.ndim != 1:
            raise ValueError(f"{name}: each clip must be a 1-D series, got shape {clip.shape}")
        if not np.isfinite(clip).all():
            raise ValueError(f"{name} has non-finite values; post-process raw model outputs, "
                             "before absent windows are nulled")
    return clips


def _like(clips: list[np.ndarray], series: Series) -> Series:
    return clips[0] if isinstance(series, np.ndarray) else clips


def median_filter(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median of a 1-D series, edges padded with the edge values."""
    if window <= 1 or len(x) == 0:
        return x
    half = window // 2
    padded = np.pad(x, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=-1)


def time_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """``out[t] = x[t - shift]`` (``shift > 0`` delays), vacated windows repeat the edge."""
    if shift == 0 or len(x) == 0:
        return x
    if shift > 0:
        return np.concatenate([np.full(min(shift, len(x)), x[0]), x[:-shift]])
    return np.concatenate([x[-shift:], np.full(min(-shift, len(x)), x[-1])])


def _centre_scale(x: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    mean = config.pred_mean
    if config.centre:
        x = x - config.pred_mean + config.label_mean
        mean = config.label_mean
    if config.scale:
        x = mean + (x - mean) * (config.label_std / config.pred_std)
    return x


def apply_postprocess(pred: Series, config: PostprocessConfig) -> Series:
    """Run the enabled steps on each clip; returns the same kind as ``pred`` (float64)."""
    clips = _clips(pred, "pred")
    out = [time_shift(_centre_scale(median_filter(c, config.median_window), config),
                      config.shift) for c in clips]
    return _like(out, pred)


def fit_postprocess(pred: Series, labels: Series,
                    candidates: PostprocessCandidates | None = None, *,
                    train_label_mean: float | None = None) -> PostprocessConfig:
    """The step parameters that maximise CCC of the processed ``pred`` against ``labels``.

    ``pred`` and ``labels`` are validation predictions and labels, clip by clip.  Every
    combination of the candidate values is tried (ties go to the earlier candidates, i.e.
    the simpler chain).  Centring adds ``train_label_mean`` (default: the mean of
    ``labels``); scaling matches the std of ``labels``.  Raises ValueError when the series
    do not pair up or are not finite.
    """
    candidates = candidates or PostprocessCandidates()
    pred_clips = _clips(pred, "pred")
    label_clips = _clips(labels, "labels")
    if [len(c) for c in pred_clips] != [len(c) for c in label_clips]:
        raise ValueError("pred and labels must have the same clips with the same lengths")
    if sum(len(c) for c in pred_clips) == 0:
        raise ValueError("cannot fit post-processing on empty series")
    target = np.concatenate(label_clips)
    label_mean = float(target.mean()) if train_label_mean is None else float(train_label_mean)

    best, best_score = PostprocessConfig(), -np.inf
    for window in candidates.median_windows:
        filtered = [median_filter(c, window) for c in pred_clips]
        joined = np.concatenate(filtered)
        base = PostprocessConfig(
            median_window=window, pred_mean=float(joined.mean()),
            # A constant prediction cannot be scaled; 1 keeps the config valid.
            pred_std=float(joined.std()) or 1.0, label_mean=label_mean,
            label_std=float(target.std()))
        for centre, scale in itertools.product(candidates.centre, candidates.scale):
            config = replace(base, centre=centre, scale=scale)
            rescaled = [_centre_scale(c, config) for c in filtered]
            for shift in candidates.shifts:
                score = ccc(np.concatenate([time_shift(c, shift) for c in rescaled]), target)
                if score > best_score:
                    best, best_score = replace(config, shift=shift), score
    logger.info("post-processing fitted: %s (CCC %.4f -> %.4f)", best,
                ccc(np.concatenate(pred_clips), target), best_score)
    return best
