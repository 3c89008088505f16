"""Temporal head (contract, padding, formats, trainability) and valence/arousal
post-processing (CCC, fitting, each step on its own)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import fusion, temporal
from models.temporal import PostprocessCandidates, PostprocessConfig, ccc
from models.temporal.postprocess import apply_postprocess, fit_postprocess, median_filter
from operators.schema import EMOTIONS

DIM = 10
TINY = {"input_dim": DIM, "hidden_dim": 16}
JIT_DEPRECATED = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")


def clips(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random features padded with NaN to the longest clip, and the lengths."""
    rng = np.random.default_rng(seed)
    features = np.full((len(lengths), max(lengths), DIM), np.nan, np.float32)
    for row, length in enumerate(lengths):
        features[row, :length] = rng.normal(size=(length, DIM))
    return features, np.asarray(lengths)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_ranges_and_padding(bidirectional):
    model = temporal.build({**TINY, "bidirectional": bidirectional})
    features, lengths = clips([9, 4, 6])
    out = temporal.predict(model, features, lengths)
    assert out.probs.shape == (3, 9, len(EMOTIONS)) and out.valence.shape == (3, 9)
    valid = np.arange(9)[None] < lengths[:, None]
    np.testing.assert_allclose(out.probs[valid].sum(-1), 1.0, atol=1e-5)
    assert np.all(np.abs(out.valence[valid]) <= 1) and np.all(np.abs(out.arousal[valid]) <= 1)
    assert np.isnan(out.probs[~valid]).all() and np.isnan(out.valence[~valid]).all()
    # A clip's outputs do not depend on its padding or on the other clips of the batch.
    for row, length in enumerate(lengths):
        alone = temporal.predict(model, features[row:row + 1, :length])
        np.testing.assert_allclose(alone.probs[0], out.probs[row, :length], atol=1e-6)
        np.testing.assert_allclose(alone.arousal[0], out.arousal[row, :length], atol=1e-6)


def test_causal_head_ignores_the_future():
    model = temporal.build({**TINY, "bidirectional": False})
    features, _ = clips([8])
    changed = features.copy()
    changed[0, 5:] = np.random.default_rng(9).normal(size=(3, DIM))
    a, b = temporal.predict(model, features), temporal.predict(model, changed)
    np.testing.assert_array_equal(a.probs[0, :5], b.probs[0, :5])
    assert np.abs(a.probs[0, 5:] - b.probs[0, 5:]).max() > 1e-6
    bidirectional = temporal.build(TINY)
    a, b = temporal.predict(bidirectional, features), temporal.predict(bidirectional, changed)
    assert np.abs(a.probs[0, :5] - b.probs[0, :5]).max() > 1e-6  # context from both sides


def test_predict_rejects_bad_input():
    model = temporal.build(TINY)
    features, lengths = clips([5, 3])
    with pytest.raises(ValueError, match=r"\(B, L, 10\)"):
        temporal.predict(model, features[..., :4], lengths)
    with pytest.raises(ValueError, match="lengths must lie"):
        temporal.predict(model, features, [6, 3])
    with pytest.raises(ValueError, match="lengths must lie"):
        temporal.predict(model, features, [5, 0])
    with pytest.raises(ValueError, match="non-finite"):
        temporal.predict(model, features, [5, 4])  # step 3 of clip 1 is NaN padding
    with pytest.raises(ValueError, match="unknown hparams"):
        temporal.build({"layers": 3})
    empty = temporal.predict(model, np.zeros((0, 4, DIM)))
    assert empty.probs.shape == (0, 4, len(EMOTIONS)) and empty.valence.shape == (0, 4)


def test_build_is_deterministic():
    features, lengths = clips([7, 5])
    a = temporal.predict(temporal.build(TINY, seed=1), features, lengths)
    b = temporal.predict(temporal.build(TINY, seed=1), features, lengths)
    c = temporal.predict(temporal.build(TINY, seed=2), features, lengths)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert not np.allclose(a.probs[0], c.probs[0])


@JIT_DEPRECATED
@pytest.mark.parametrize("bidirectional", [True, False])
def test_torchscript_export_parity(bidirectional, tmp_path):
    model = temporal.build({**TINY, "bidirectional": bidirectional}, seed=3)
    temporal.export_torchscript(model, tmp_path / "temporal.ts")
    loaded = temporal.load(tmp_path / "temporal.ts")
    assert isinstance(loaded.network, torch.jit.ScriptModule)
    assert loaded.hparams == model.hparams
    features, lengths = clips([12, 7, 3, 9])
    eager, scripted = temporal.predict(model, features, lengths), temporal.predict(
        loaded, features, lengths)
    for key in ("probs", "valence", "arousal"):
        np.testing.assert_allclose(getattr(scripted, key), getattr(eager, key), atol=1e-5)


@JIT_DEPRECATED
def test_checkpoint_round_trip_and_errors(tmp_path):
    model = temporal.build(TINY, seed=4)
    temporal.save(model, tmp_path / "head.pt", metadata={"name": "head-test"})
    loaded = temporal.load(tmp_path / "head.pt")
    assert loaded.name == "head-test" and loaded.hparams == model.hparams
    features, lengths = clips([6, 2])
    np.testing.assert_array_equal(temporal.predict(loaded, features, lengths).probs,
                                  temporal.predict(model, features, lengths).probs)
    with pytest.raises(FileNotFoundError):
        temporal.load(tmp_path / "missing.pt")
    fusion.save(fusion.build("decision"), tmp_path / "fusion.pt")
    with pytest.raises(ValueError, match="not a temporal head"):
        temporal.load(tmp_path / "fusion.pt")
    ckpt = torch.load(tmp_path / "head.pt", weights_only=True)
    ckpt["classes"] = ["a", "b"]
    torch.save(ckpt, tmp_path / "classes.pt")
    with pytest.raises(ValueError, match="predicts classes"):
        temporal.load(tmp_path / "classes.pt")


def test_takes_the_fusion_features():
    """The integration contract: fusion features of a clip's windows, in time order."""
    fusion_model = fusion.build("attention-bilinear", {"face_dim": 8, "voice_dim": 4,
                                                       "fused_dim": 24})
    head = temporal.build({"input_dim": fusion_model.feature_dim})
    rng = np.random.default_rng(0)
    n = 6
    windows = fusion.predict(fusion_model, rng.normal(size=(n, 3, 8)), np.ones((n, 3), bool),
                             rng.normal(size=(n, 1, 4)), np.arange(n) % 2 == 0, rng.random(n))
    out = temporal.predict(head, windows.features[None])
    assert out.probs.shape == (1, n, len(EMOTIONS)) and np.isfinite(out.probs).all()


def test_overfits_context_dependent_labels():
    """Each window shows a symbol; its label is (symbol + previous symbol) mod 7, so no
    single window determines it; valence is the previous symbol's, arousal the next's."""
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(7, DIM)).astype(np.float32)
    lengths = rng.integers(6, 13, size=24)
    symbols = rng.integers(0, 7, size=(24, lengths.max()))
    features = codebook[symbols] + 0.1 * rng.normal(size=(*symbols.shape, DIM)).astype(np.float32)
    previous = np.concatenate([np.zeros((24, 1), int), symbols[:, :-1]], 1)
    following = np.concatenate([symbols[:, 1:], np.zeros((24, 1), int)], 1)
    labels = torch.from_numpy((symbols + previous) % 7)
    levels = np.linspace(-0.8, 0.8, 7)
    va = torch.tensor(np.stack([levels[previous], levels[following]], -1), dtype=torch.float32)
    valid = torch.from_numpy(np.arange(lengths.max())[None] < lengths[:, None])

    model = temporal.build({**TINY, "hidden_dim": 32, "dropout": 0.0})
    net = model.network.train()
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, lengths_t = torch.from_numpy(features), torch.from_numpy(lengths)
    for _ in range(250):
        out = net(x, lengths_t)
        loss = F.cross_entropy(out.logits[valid], labels[valid]) + F.mse_loss(
            torch.stack([out.valence, out.arousal], -1)[valid], va[valid])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()

    pred = temporal.predict(model, features, lengths)
    mask = valid.numpy()
    # Not 1.0: an exact argmax on every window after a fixed number of steps depends on the
    # CPU's float path; 95 % (chance: 1/7) still shows the context was learnt.
    assert (pred.probs.argmax(-1)[mask] == labels.numpy()[mask]).mean() >= 0.95
    predicted_va = np.stack([pred.valence, pred.arousal], -1)[mask]
    assert np.abs(predicted_va - va.numpy()[mask]).max() < 0.15


# --- post-processing --------------------------------------------------------------------


def smooth_series(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    return (0.5 * np.sin(t / 15 + rng.uniform(0, 6)) + 0.3 * np.sin(t / 37 + rng.uniform(0, 6))
            + 0.2)


def test_ccc():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(np.full(5, 0.3), np.full(5, 0.3)) == 1.0
    assert ccc(x - x.mean(), -(x - x.mean())) == pytest.approx(-1.0)
    y = rng.normal(size=200)
    assert ccc(x, y) == pytest.approx(ccc(y, x))
    # Pearson r = 1, but scaled and biased: for zero-mean x and y = s x + b,
    # CCC = 2 s var(x) / (var(x) + s^2 var(x) + b^2).
    centred = x - x.mean()
    expected = 2 * 0.5 * x.var() / (x.var() + 0.25 * x.var() + 0.3**2)
    assert ccc(centred, 0.5 * centred + 0.3) == pytest.approx(expected)
    with pytest.raises(ValueError):
        ccc(x, x[:-1])
    with pytest.raises(ValueError):
        ccc(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))


def test_fit_recovers_shift_bias_and_scale():
    """Labels y; predictions that lead y by 3 windows, halved, offset, noisy and spiky."""
    rng = np.random.default_rng(0)
    labels, preds = [], []
    for n in (300, 250, 400):
        y = smooth_series(n, rng)
        lead = np.concatenate([y[3:], np.full(3, y[-1])])
        pred = (lead - 0.2) * 0.5 - 0.1 + 0.02 * rng.normal(size=n)
        spikes = rng.random(n) < 0.05
        pred[spikes] += 0.8 * rng.choice([-1, 1], spikes.sum())
        labels.append(y)
        preds.append(pred)
    config = fit_postprocess(preds, labels)
    assert config.shift == 3  # delaying by 3 windows realigns
    assert config.median_window > 1 and config.centre and config.scale
    # Centring then scaling map v -> label_mean + (v - pred_mean) * ratio: the inverse of the
    # distortion v = 0.5 (y - 0.2) - 0.1.
    ratio = config.label_std / config.pred_std
    assert ratio == pytest.approx(2.0, rel=0.05)
    for y in (-1.0, 0.0, 1.0):
        distorted = 0.5 * (y - 0.2) - 0.1
        assert config.label_mean + (distorted - config.pred_mean) * ratio == pytest.approx(
            y, abs=0.05)
    before = ccc(np.concatenate(preds), np.concatenate(labels))
    after = ccc(np.concatenate(apply_postprocess(preds, config)), np.concatenate(labels))
    assert before < 0.6 and after > 0.99


def test_each_step_on_its_own():
    x = np.array([0.0, 1.0, 9.0, 3.0, 4.0, 5.0])
    assert np.array_equal(apply_postprocess(x, PostprocessConfig()), x)
    np.testing.assert_array_equal(apply_postprocess(x, PostprocessConfig(median_window=3)),
                                  [0.0, 1.0, 3.0, 4.0, 4.0, 5.0])
    stats = {"pred_mean": 2.0, "label_mean": 0.5, "pred_std": 4.0, "label_std": 2.0}
    np.testing.assert_allclose(apply_postprocess(x, PostprocessConfig(centre=True, **stats)),
                               x - 1.5)
    np.testing.assert_allclose(apply_postprocess(x, PostprocessConfig(scale=True, **stats)),
                               2.0 + (x - 2.0) * 0.5)
    np.testing.assert_allclose(
        apply_postprocess(x, PostprocessConfig(centre=True, scale=True, **stats)),
        0.5 + (x - 1.5 - 0.5) * 0.5)
    np.testing.assert_array_equal(apply_postprocess(x, PostprocessConfig(shift=2)),
                                  [0.0, 0.0, 0.0, 1.0, 9.0, 3.0])
    np.testing.assert_array_equal(apply_postprocess(x, PostprocessConfig(shift=-2)),
                                  [9.0, 3.0, 4.0, 5.0, 5.0, 5.0])
    np.testing.assert_array_equal(apply_postprocess(x, PostprocessConfig(shift=10)), np.zeros(6))


def test_fit_only_uses_the_allowed_steps():
    rng = np.random.default_rng(1)
    y = smooth_series(300, rng)
    pred = 0.5 * np.concatenate([y[2:], [y[-1]] * 2]) + 0.3
    only_shift = PostprocessCandidates(median_windows=(1,), centre=(False,), scale=(False,),
                                       shifts=(0, 1, 2, 3))
    config = fit_postprocess(pred, y, only_shift)
    assert (config.median_window, config.centre, config.scale, config.shift) == (1, False,
                                                                                 False, 2)
    nothing = PostprocessCandidates(median_windows=(1,), centre=(False,), scale=(False,),
                                    shifts=(0,))
    assert np.array_equal(apply_postprocess(pred, fit_postprocess(pred, y, nothing)), pred)
    # An already perfect prediction is left alone: ties go to the simpler chain.
    perfect = fit_postprocess(y, y)
    assert (perfect.median_window, perfect.shift, perfect.centre, perfect.scale) == (
        1, 0, False, False)


def test_clips_are_processed_separately():
    a, b = np.arange(5.0), np.arange(5.0) + 100
    config = PostprocessConfig(median_window=3, shift=1)
    together = apply_postprocess([a, b], config)
    assert isinstance(together, list) and len(together) == 2
    np.testing.assert_array_equal(together[1], apply_postprocess(b, config))
    assert together[1][0] == 100.0  # nothing from the end of clip a leaks in


def test_postprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="odd"):
        PostprocessConfig(median_window=4)
    with pytest.raises(ValueError, match="non-finite"):
        apply_postprocess(np.array([0.0, np.nan]), PostprocessConfig())
    with pytest.raises(ValueError, match="same clips"):
        fit_postprocess([np.zeros(3)], [np.zeros(4)])
    assert np.array_equal(median_filter(np.array([3.0]), 5), [3.0])
