"""Training losses (pipelines/train/losses.py) on hand-computed cases, masking and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.train import losses

LN2, LN7 = math.log(2), math.log(7)


def test_weighted_cross_entropy_values():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])  # p(class 0) = 1/2, 3/4
    target = torch.tensor([0, 1])
    # per-sample: -ln(1/2) = ln 2, -ln(1/4) = ln 4
    torch.testing.assert_close(losses.weighted_cross_entropy(logits, target),
                               torch.tensor((LN2 + math.log(4)) / 2))
    weight = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(losses.weighted_cross_entropy(logits, target, weight),
                               torch.tensor((1 * LN2 + 3 * math.log(4)) / 4))


def test_weighted_cross_entropy_masks_absent_labels():
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0], [1.0, 2.0]])
    torch.testing.assert_close(losses.weighted_cross_entropy(logits, torch.tensor([0, -1, -1])),
                               torch.tensor(LN2))
    as_float = torch.tensor([0.0, float("nan"), -1.0])
    torch.testing.assert_close(losses.weighted_cross_entropy(logits, as_float),
                               torch.tensor(LN2))


def test_multilabel_bce_values_and_nan_mask():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])  # sigmoid(ln 3) = 3/4
    target = torch.tensor([[1.0, 0.0], [1.0, float("nan")]])
    # valid entries: ln 2, ln 2, -ln(3/4)
    expected = (2 * LN2 + math.log(4 / 3)) / 3
    torch.testing.assert_close(losses.multilabel_bce(logits, target), torch.tensor(expected))


def test_soft_cross_entropy_values():
    logits = torch.zeros(3, 7)
    target = torch.zeros(3, 7)
    target[0, 3] = 1.0
    target[1, :2] = torch.tensor([2.0, 6.0])  # vote counts: normalised to 1/4, 3/4
    target[2] = float("nan")  # no distribution: skipped
    torch.testing.assert_close(losses.soft_cross_entropy(logits, target), torch.tensor(LN7))
    logits = torch.tensor([[0.0, math.log(3)]])  # q = (1/4, 3/4)
    # -(1/2 · ln 1/4 + 1/2 · ln 3/4)
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    torch.testing.assert_close(losses.soft_cross_entropy(logits, torch.tensor([[1.0, 1.0]])),
                               torch.tensor(expected))


def test_ccc_loss_values():
    target = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(losses.ccc_loss(target.clone(), target), torch.tensor(0.0))
    centred = target - 2
    torch.testing.assert_close(losses.ccc_loss(-centred, centred), torch.tensor(2.0))
    # x = 1,2,3; y = 2,4,6: cov 4/3, var 2/3 and 8/3, mean gap 2 -> CCC = (8/3) / (22/3)
    torch.testing.assert_close(losses.ccc_loss(target, 2 * target), torch.tensor(1 - 8 / 22))


def test_ccc_loss_columns_and_nan_masking():
    pred = torch.tensor([[1.0, 0.5], [2.0, 0.1], [3.0, -0.2], [9.0, 0.3]])
    target = torch.tensor([[1.0, float("nan")], [2.0, float("nan")], [3.0, 0.4],
                           [float("nan"), float("nan")]])
    # column 0: rows 0-2 identical -> CCC 1; column 1: one valid value -> left out
    torch.testing.assert_close(losses.ccc_loss(pred, target), torch.tensor(0.0))
    ccc = losses.concordance_cc(pred, target)
    assert ccc.shape == (2,) and math.isclose(float(ccc[0]), 1.0, abs_tol=1e-6)
    assert math.isnan(float(ccc[1]))


NAN = float("nan")
CASES = {  # loss(output (4, 7), target), a target with valid entries, one with none
    "weighted_cross_entropy": (losses.weighted_cross_entropy, torch.tensor([0, 3, -1, 6]),
                               torch.tensor([-1, -1, -1, -1])),
    "multilabel_bce": (losses.multilabel_bce, (torch.arange(28).reshape(4, 7) % 3 == 0).float(),
                       torch.full((4, 7), NAN)),
    "soft_cross_entropy": (losses.soft_cross_entropy, torch.arange(28.0).reshape(4, 7),
                           torch.full((4, 7), NAN)),
    "ccc_loss": (lambda out, target: losses.ccc_loss(out[:, :2], target),
                 torch.tensor([[0.5, -0.2], [-0.4, 0.1], [0.9, 0.6], [0.0, NAN]]),
                 torch.full((4, 2), NAN)),
}


@pytest.mark.parametrize("name", CASES)
def test_losses_pass_gradients_and_survive_empty_batches(name):
    loss_fn, target, empty_target = CASES[name]
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 7)
    features = torch.randn(4, 5)
    loss = loss_fn(model(features), target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0

    model.zero_grad()
    nothing = loss_fn(model(features), empty_target)
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad  # attached to the graph
    nothing.backward()
    assert torch.equal(model.weight.grad, torch.zeros_like(model.weight))
