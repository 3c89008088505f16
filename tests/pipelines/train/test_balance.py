"""Class weights and rare-class re-sampling (pipelines/train/balance.py) against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from operators.schema import EMOTIONS, URI
from pipelines.train.balance import class_weights, oversample_rare
from pipelines.train.table import LABEL, NO_LABEL, sample_table

E = {name: i for i, name in enumerate(EMOTIONS)}


def test_class_weights_reciprocal_frequency():
    weights = class_weights([0, 0, 0, 1, -1, float("nan")], n_classes=3)
    # N = 4 labelled, K = 2 classes present: w = 4 / (2 · n_c)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 2.0, 0.0]))
    assert weights.dtype == torch.float32
    counts = torch.tensor([3.0, 1.0, 0.0])
    assert math.isclose(float((weights * counts).sum() / counts.sum()), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(class_weights(torch.tensor([2, 2, 1])),
                               torch.tensor([0, 1.5, 0.75, 0, 0, 0, 0]))
    with pytest.raises(ValueError):
        class_weights([0, 5], n_classes=3)


def test_oversample_rare_counts_and_spread():
    labels = [E["happy"]] * 100 + [E["disgust"]] * 10 + [E["fear"]] * 30 + [NO_LABEL] * 3
    frame = sample_table(len(labels), {LABEL: np.array(labels), URI: [
        f"clip{i}" for i in range(len(labels))]})
    out = oversample_rare(frame, target_ratio=0.5, max_factor=3.0, seed=0)
    counts = out[LABEL].value_counts().to_dict()
    # goal 50: fear 30 -> 50; disgust 10 -> capped at 3 × 10 = 30; unlabelled kept once
    assert counts == {E["happy"]: 100, E["fear"]: 50, E["disgust"]: 30, NO_LABEL: 3}
    pd.testing.assert_frame_equal(out.iloc[: len(frame)], frame)
    repeats = out[out[LABEL] == E["disgust"]][URI].value_counts()
    assert set(repeats) == {3}  # every disgust clip exactly three times
    fear = out[out[LABEL] == E["fear"]][URI].value_counts()
    assert set(fear) <= {1, 2}
    again = oversample_rare(frame, target_ratio=0.5, max_factor=3.0, seed=0)
    pd.testing.assert_frame_equal(out, again)
