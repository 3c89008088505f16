"""Window-level fusion models: contract (shapes, masks, modes), formats, and trainability.

Everything is synthetic and small; the overfit tests train for a few hundred full-batch steps
on CPU to show that gradients reach every path, not to measure accuracy on real data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import fusion, temporal
from models.fusion import FUSION_MODES
from models.fusion.network import fusion_mode, masked_softmax
from operators.schema import EMOTIONS

FACE_DIM, VOICE_DIM, T, R = 12, 6, 4, 3
SMALL = {"face_dim": FACE_DIM, "voice_dim": VOICE_DIM}
# The overfit tests' bound: not 1.0, since an exact argmax on every window after a fixed
# number of steps depends on the CPU's float path; 95 % (chance: 1/7) still shows the
# combination was learnt.
MIN_FIT_ACCURACY = 0.95

TINY = {"attention-bilinear": {**SMALL, "attention_dim": 16, "bilinear_dim": 32, "fused_dim": 32},
        "decision": {**SMALL, "hidden_dim": 16}}
ARCHS = tuple(TINY)
# TorchScript is what the issue asks for; torch 2.11 marks its API deprecated in favour of
# torch.export, which the pipeline does not use yet.
JIT_DEPRECATED = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")


def windows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n random windows cycling through the four modality cases, with some masked frames.

    Rows 4k: both modalities, 4k+1: face only, 4k+2: voice only, 4k+3: neither.
    """
    rng = np.random.default_rng(seed)
    face_mask = rng.random((n, T)) < 0.7
    face_mask[:, 0] = True
    face_mask[2::4] = False
    face_mask[3::4] = False
    voice_mask = np.ones(n, bool)
    voice_mask[1::4] = False
    voice_mask[3::4] = False
    return {
        "face_feats": rng.normal(size=(n, T, FACE_DIM)).astype(np.float32),
        "face_mask": face_mask,
        "voice_feats": rng.normal(size=(n, R, VOICE_DIM)).astype(np.float32),
        "voice_mask": voice_mask,
        "speaking": rng.random(n).astype(np.float32),
    }


def outputs_equal(a: fusion.FusionPrediction, b: fusion.FusionPrediction) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("probs", "valence", "arousal", "features", "fusion_mode"))


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_ranges_and_modes(arch):
    model = fusion.build(arch, TINY[arch])
    out = fusion.predict(model, **windows(8))
    assert out.probs.shape == (8, len(EMOTIONS)) and out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)
    assert out.valence.shape == out.arousal.shape == (8,)
    assert np.all(np.abs(out.valence) <= 1) and np.all(np.abs(out.arousal) <= 1)
    assert out.features.shape == (8, model.feature_dim)
    for array in (out.probs, out.valence, out.arousal, out.features):
        assert np.isfinite(array).all()
    assert out.fusion_mode.tolist() == ["fusion", "face_only", "voice_only", "none"] * 2


def test_fusion_mode_codes():
    face = torch.tensor([True, True, False, False])
    voice = torch.tensor([True, False, True, False])
    assert [FUSION_MODES[i] for i in fusion_mode(face, voice)] == list(FUSION_MODES)


def test_masked_softmax_is_exact_and_nan_free():
    scores = torch.tensor([[1.0, float("nan"), 3.0], [5.0, 6.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(scores, mask, dim=1)
    expected = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    assert weights[0, 1] == 0 and torch.allclose(weights[0, [0, 2]], expected)
    assert torch.equal(weights[1], torch.zeros(3))
    (weights * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_masked_inputs_do_not_change_outputs(arch):
    model = fusion.build(arch, TINY[arch])
    inputs = windows(12)
    reference = fusion.predict(model, **inputs)
    perturbed = {k: v.copy() for k, v in inputs.items()}
    rng = np.random.default_rng(1)
    hidden_frames = ~perturbed["face_mask"]
    perturbed["face_feats"][hidden_frames] = 1e6 * rng.normal(size=(hidden_frames.sum(), FACE_DIM))
    perturbed["face_feats"][hidden_frames.nonzero()[0][:3], hidden_frames.nonzero()[1][:3]] = np.nan
    no_voice = ~perturbed["voice_mask"]
    perturbed["voice_feats"][no_voice] = np.nan
    perturbed["speaking"][no_voice] = 0.9
    assert outputs_equal(fusion.predict(model, **perturbed), reference)


@pytest.mark.parametrize("arch", ARCHS)
def test_single_modality_windows_ignore_the_absent_one(arch):
    """No face → the prediction comes from the voice alone, and vice versa."""
    model = fusion.build(arch, TINY[arch])
    inputs = windows(4)
    out = fusion.predict(model, **inputs)
    assert out.fusion_mode.tolist() == ["fusion", "face_only", "voice_only", "none"]
    # Same voice, face taken away: a valid voice-only prediction, different from the fused one.
    no_face = {**inputs, "face_mask": np.zeros_like(inputs["face_mask"])}
    voice_only = fusion.predict(model, **no_face)
    assert voice_only.fusion_mode[0] == "voice_only"
    np.testing.assert_allclose(voice_only.probs.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(voice_only.probs[0], out.probs[0])
    # Rows are independent: the none row's finite outputs are the same alone as in the batch.
    alone = fusion.predict(model, **{k: v[3:] for k, v in inputs.items()})
    np.testing.assert_allclose(alone.probs[0], out.probs[3], atol=1e-6)
    assert alone.fusion_mode[0] == "none" and np.isfinite(alone.features).all()


def test_decision_fusion_renormalises_over_present_modalities():
    model = fusion.build("decision", TINY["decision"])
    net = model.network
    with torch.no_grad():
        net.modality_logits.copy_(torch.tensor([2.0, -1.0]))
    inputs = windows(4)
    out = fusion.predict(model, **inputs)
    face = torch.from_numpy(inputs["face_feats"][1])[torch.from_numpy(inputs["face_mask"][1])]
    with torch.no_grad():
        face_head = net.face_head(net.face_norm(face).mean(0))
    np.testing.assert_allclose(out.probs[1], torch.softmax(face_head[:7], 0).numpy(), atol=1e-5)
    np.testing.assert_allclose(out.valence[1], torch.tanh(face_head[7]).item(), atol=1e-5)
    np.testing.assert_allclose(out.probs[3], 1 / 7, atol=1e-6)  # none: uniform
    assert out.valence[3] == 0 and out.arousal[3] == 0


def test_predict_rejects_bad_input():
    model = fusion.build("attention-bilinear", TINY["attention-bilinear"])
    inputs = windows(4)
    with pytest.raises(ValueError, match="face_dim"):
        fusion.predict(model, **{**inputs, "face_feats": inputs["face_feats"][..., :5]})
    with pytest.raises(ValueError, match="inconsistent shapes"):
        fusion.predict(model, **{**inputs, "speaking": inputs["speaking"][:3]})
    with pytest.raises(ValueError, match="dimensions"):
        fusion.predict(model, **{**inputs, "voice_mask": inputs["voice_mask"][:, None]})
    with pytest.raises(ValueError, match="T >= 1"):
        fusion.predict(model, **{**inputs, "face_feats": inputs["face_feats"][:, :0],
                                 "face_mask": inputs["face_mask"][:, :0]})
    bad = {k: v.copy() for k, v in inputs.items()}
    bad["face_feats"][0, 0, 0] = np.nan  # frame 0 of row 0 is present
    with pytest.raises(ValueError, match="non-finite"):
        fusion.predict(model, **bad)
    empty = fusion.predict(model, **{k: v[:0] for k, v in inputs.items()})
    assert empty.probs.shape == (0, len(EMOTIONS)) and empty.fusion_mode.shape == (0,)
    with pytest.raises(ValueError, match="unknown hparams"):
        fusion.build("attention-bilinear", {"face_dims": 3})
    with pytest.raises(ValueError, match="unknown fusion arch"):
        fusion.build("transformer")


@pytest.mark.parametrize("arch", ARCHS)
def test_build_is_deterministic_and_leaves_global_rng(arch):
    state = torch.random.get_rng_state()
    a, b = fusion.build(arch, TINY[arch], seed=3), fusion.build(arch, TINY[arch], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    inputs = windows(8)
    assert outputs_equal(fusion.predict(a, **inputs), fusion.predict(b, **inputs))
    assert outputs_equal(fusion.predict(a, **inputs), fusion.predict(a, **inputs))
    c = fusion.build(arch, TINY[arch], seed=4)
    assert not np.array_equal(fusion.predict(c, **inputs).probs, fusion.predict(a, **inputs).probs)


@JIT_DEPRECATED
@pytest.mark.parametrize("arch", ARCHS)
def test_torchscript_export_parity(arch, tmp_path):
    model = fusion.build(arch, TINY[arch], seed=1)
    path = tmp_path / "fusion.ts"
    fusion.export_torchscript(model, path)
    loaded = fusion.load(path)
    assert isinstance(loaded.network, torch.jit.ScriptModule)
    assert loaded.arch == arch and loaded.hparams == model.hparams
    inputs = windows(16)
    eager, scripted = fusion.predict(model, **inputs), fusion.predict(loaded, **inputs)
    for key in ("probs", "valence", "arousal", "features"):
        np.testing.assert_allclose(getattr(scripted, key), getattr(eager, key), atol=1e-5)
    assert np.array_equal(scripted.fusion_mode, eager.fusion_mode)
    # A TorchScript model can be written back as a checkpoint.
    fusion.save(loaded, tmp_path / "again.pt")
    assert outputs_equal(fusion.predict(fusion.load(tmp_path / "again.pt"), **inputs), scripted)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip(arch, tmp_path):
    model = fusion.build(arch, TINY[arch], seed=2)
    path = tmp_path / "fusion.pt"
    fusion.save(model, path, metadata={"name": "fusion-test", "data": "synthetic"})
    loaded = fusion.load(path)
    assert (loaded.arch, loaded.hparams, loaded.name) == (arch, model.hparams, "fusion-test")
    assert loaded.metadata["data"] == "synthetic"
    inputs = windows(8)
    assert outputs_equal(fusion.predict(loaded, **inputs), fusion.predict(model, **inputs))


@JIT_DEPRECATED
def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fusion.load(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an emoray-checkpoint"):
        fusion.load(tmp_path / "foreign.pt")
    temporal.save(temporal.build({"input_dim": 8}), tmp_path / "temporal.pt")
    with pytest.raises(ValueError, match="not a fusion model"):
        fusion.load(tmp_path / "temporal.pt")
    temporal.export_torchscript(temporal.build({"input_dim": 8}), tmp_path / "temporal.ts")
    with pytest.raises(ValueError, match="not a fusion model"):
        fusion.load(tmp_path / "temporal.ts")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "bare.ts")
    with pytest.raises(ValueError, match=r"without emoray\.json"):
        fusion.load(tmp_path / "bare.ts")
    fusion.save(fusion.build("decision", TINY["decision"]), tmp_path / "decision.pt")
    ckpt = torch.load(tmp_path / "decision.pt", weights_only=True)
    ckpt["hparams"]["hidden_dim"] = 99
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="weights do not fit"):
        fusion.load(tmp_path / "mismatch.pt")


def test_gradients_reach_every_parameter():
    model = fusion.build("attention-bilinear", {**TINY["attention-bilinear"],
                                                "modality_dropout": 0.0})
    net = model.network.train()
    batch = {k: torch.from_numpy(v) for k, v in windows(16).items()}
    out = net(**batch)
    loss = F.cross_entropy(out.logits, torch.arange(16) % 7) + out.valence.square().mean()
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def train(net: torch.nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor,
          va: torch.Tensor | None = None, steps: int = 300, lr: float = 1e-2) -> None:
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        out = net(**batch)
        loss = F.cross_entropy(out.logits, labels)
        if va is not None:
            loss = loss + F.mse_loss(torch.stack([out.valence, out.arousal], 1), va)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()


def cluster_windows(face_cluster: np.ndarray, voice_cluster: np.ndarray, seed: int = 0,
                    ) -> dict[str, torch.Tensor]:
    """Windows whose frames lie near ``face_cluster``'s centre and regions near
    ``voice_cluster``'s, with masked frames full of garbage."""
    rng = np.random.default_rng(seed)
    n = len(face_cluster)
    face_centres = 2 * rng.normal(size=(7, FACE_DIM))
    voice_centres = 2 * rng.normal(size=(7, VOICE_DIM))
    face = face_centres[face_cluster][:, None] + 0.3 * rng.normal(size=(n, T, FACE_DIM))
    face_mask = rng.random((n, T)) < 0.7
    face_mask[:, 0] = True
    face[~face_mask] = 100 * rng.normal(size=((~face_mask).sum(), FACE_DIM))
    voice = voice_centres[voice_cluster][:, None] + 0.3 * rng.normal(size=(n, R, VOICE_DIM))
    return {"face_feats": torch.tensor(face, dtype=torch.float32),
            "face_mask": torch.from_numpy(face_mask),
            "voice_feats": torch.tensor(voice, dtype=torch.float32),
            "voice_mask": torch.ones(n, dtype=torch.bool),
            "speaking": torch.from_numpy(rng.random(n).astype(np.float32))}


def test_attention_bilinear_overfits_a_combination_only_task():
    """The class is (face cluster + voice cluster) mod 7: each modality alone is at chance."""
    face_cluster, voice_cluster = (g.ravel() for g in np.meshgrid(np.arange(7), np.arange(7)))
    face_cluster, voice_cluster = np.tile(face_cluster, 3), np.tile(voice_cluster, 3)
    labels = torch.from_numpy((face_cluster + voice_cluster) % 7)
    va = torch.stack([torch.cos(labels * 0.9), torch.sin(labels * 0.9)], 1) * 0.8
    batch = cluster_windows(face_cluster, voice_cluster)
    model = fusion.build("attention-bilinear", {**TINY["attention-bilinear"], "dropout": 0.0,
                                                "modality_dropout": 0.0})
    train(model.network, batch, labels, va)
    out = fusion.predict(model, **{k: v.numpy() for k, v in batch.items()})
    assert (out.probs.argmax(1) == labels.numpy()).mean() >= MIN_FIT_ACCURACY
    np.testing.assert_allclose(np.stack([out.valence, out.arousal], 1), va.numpy(), atol=0.1)
    assert set(out.fusion_mode) == {"fusion"}


def test_attention_bilinear_learns_to_predict_from_either_modality():
    """Both modalities carry the class; windows miss one at random.  Modality dropout in
    training lets the unimodal paths stand alone: every window ends up right."""
    rng = np.random.default_rng(5)
    labels = np.tile(np.arange(7), 30)
    batch = cluster_windows(labels, labels, seed=5)
    case = rng.integers(0, 3, len(labels))  # 0 both, 1 face only, 2 voice only
    batch["face_mask"][case == 2] = False
    batch["voice_mask"][case == 1] = False
    model = fusion.build("attention-bilinear", {**TINY["attention-bilinear"],
                                                "modality_dropout": 0.3})
    train(model.network, batch, torch.from_numpy(labels), steps=200)
    out = fusion.predict(model, **{k: v.numpy() for k, v in batch.items()})
    assert (out.probs.argmax(1) == labels).mean() >= MIN_FIT_ACCURACY
    assert [FUSION_MODES.index(m) for m in out.fusion_mode] == case.tolist()


@pytest.mark.parametrize("informative", ["face", "voice"])
def test_decision_fusion_weights_move_to_the_informative_modality(informative):
    labels = np.tile(np.arange(7), 20)
    constant = np.zeros_like(labels)  # the other modality looks the same for every class
    batch = (cluster_windows(labels, constant) if informative == "face"
             else cluster_windows(constant, labels))
    model = fusion.build("decision", TINY["decision"])
    train(model.network, batch, torch.from_numpy(labels), steps=200)
    face_weight, voice_weight = model.network.modality_weights().tolist()
    weight = face_weight if informative == "face" else voice_weight
    assert weight > 0.8, (face_weight, voice_weight)
    out = fusion.predict(model, **{k: v.numpy() for k, v in batch.items()})
    assert (out.probs.argmax(1) == labels).mean() >= MIN_FIT_ACCURACY
