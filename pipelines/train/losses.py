"""Training losses for the emotion models (plain PyTorch).

Every loss takes a batch and returns a scalar that is the mean over the valid targets, and is
batch-safe: targets that are absent (a negative class index, NaN) are masked out, so one batch
can mix samples with and without a label of each kind (a face crop with a class but no
valence; a manifest window with valence only).  A batch with no valid target returns a zero
that is still attached to the model's graph (``logits.sum() * 0``), so ``backward()`` works and
distributed data-parallel workers all reduce the same parameters' gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _zero(pred: torch.Tensor) -> torch.Tensor:
    # Attached to the graph: DDP expects a gradient (here 0) for every parameter on every rank.
    return pred.sum() * 0.0


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None = None,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``logits`` (B, C) against class indices ``target`` (B,), weighted per
    class by ``weight`` (C,) (e.g. ``balance.class_weights``), with ``label_smoothing`` as in
    ``torch.nn.functional.cross_entropy`` (the target puts ``1 - ε + ε/C`` on its class).

    Targets that are negative (``table.NO_LABEL``) or NaN are skipped.  The mean is
    weighted as in ``torch.nn.functional.cross_entropy``: ``Σ w[y_i]·l_i / Σ w[y_i]`` over the
    valid samples, so the loss's scale does not depend on the batch's class mix.
    """
    valid = target >= 0
    if torch.is_floating_point(target):
        valid &= ~torch.isnan(target)
    if not bool(valid.any()):
        return _zero(logits)
    return F.cross_entropy(logits[valid], target[valid].long(), weight=weight,
                           label_smoothing=label_smoothing)


def multilabel_bce(logits: torch.Tensor, target: torch.Tensor,
                   pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of independent sigmoids (B, C) against targets in [0, 1] (B, C),
    e.g. the FER+ ``multilabel`` scheme.  NaN targets (a whole row, or single entries) are
    skipped; the mean is over the valid entries.  ``pos_weight`` (C,) weighs positives, as in
    ``torch.nn.BCEWithLogitsLoss``.
    """
    valid = ~torch.isnan(target)
    if not bool(valid.any()):
        return _zero(logits)
    losses = F.binary_cross_entropy_with_logits(
        logits, target.nan_to_num(0.0), pos_weight=pos_weight, reduction="none")
    return losses[valid].mean()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a label distribution: ``-Σ_c p_c · log softmax(logits)_c``,
    averaged over rows (FER+'s crossentropy scheme, label smoothing, distillation).

    ``target`` (B, C) rows are normalised to sum 1 here (vote counts work as well as shares);
    rows with a NaN or a non-positive sum are skipped.  The minimum is the target's entropy,
    not 0 (it equals KL(p ‖ q) + H(p)).
    """
    total = target.sum(dim=1)
    valid = ~torch.isnan(target).any(dim=1) & (total > 0)
    if not bool(valid.any()):
        return _zero(logits)
    p = target[valid] / total[valid, None]
    return -(p * F.log_softmax(logits[valid], dim=1)).sum(dim=1).mean()


def concordance_cc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Lin's concordance correlation coefficient per column of (B,) or (B, D) inputs:
    ``2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²)`` with population moments, over
    the rows where ``target`` is not NaN.  Returns (D,) (a 0-d tensor for 1-D inputs); a
    column with fewer than 2 valid rows gives NaN.  ``eps`` keeps a constant pair finite.
    """
    squeeze = pred.dim() == 1
    pred2, target2 = (pred[:, None], target[:, None]) if squeeze else (pred, target)
    valid = ~torch.isnan(target2)
    count = valid.sum(dim=0)
    weight = valid.to(pred2.dtype)
    n = count.clamp(min=1).to(pred2.dtype)
    y = target2.nan_to_num(0.0)
    mean_x = (pred2 * weight).sum(0) / n
    mean_y = (y * weight).sum(0) / n
    dx, dy = (pred2 - mean_x) * weight, (y - mean_y) * weight
    cov = (dx * dy).sum(0) / n
    var_x, var_y = (dx * dx).sum(0) / n, (dy * dy).sum(0) / n
    ccc = 2 * cov / (var_x + var_y + (mean_x - mean_y) ** 2 + eps)
    ccc = torch.where(count >= 2, ccc, torch.full_like(ccc, float("nan")))
    return ccc[0] if squeeze else ccc


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − CCC`` for valence/arousal regression, averaged over the columns of (B,) or (B, D)
    inputs (e.g. D = 2: valence, arousal); 0 for a perfect fit, 2 for a mirrored one.

    Unlike MSE it rewards following the batch's spread and correlation, which is how dimension
    predictions are judged (AVEC, AffectNet).  NaN targets are masked per column; columns with
    fewer than 2 valid rows are left out (CCC needs a variance), and with none left the loss is
    an attached zero.  Batches of a few samples give noisy CCC: use batches of 32+.
    """
    ccc = concordance_cc(pred, target).reshape(-1)
    defined = ~torch.isnan(ccc)
    if not bool(defined.any()):
        return _zero(pred)
    return (1 - ccc[defined]).mean()
