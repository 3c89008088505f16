"""Face-emotion networks.  Each takes a preprocessed (N, C, S, S) batch of face crops.

Shared contract, relied on by :mod:`models.face_emotion.model`:

* ``forward_features(x) -> (logits (N, classes), features (N, feature_dim))``, where
  ``features`` is the penultimate vector, pooled over space (what the classification layer
  reads, in eval mode), used for multimodal fusion; ``forward(x)`` returns the logits alone.
* ``feature_dim`` (int attribute), ``INPUT_CONV`` (state-dict key of the first convolution's
  weight) and ``HEAD`` (state-dict prefix of the classification layer) let user-supplied
  initial weights be adapted to the input channels and class count.

Networks:

* :class:`MiniXception`: the "mini-Xception" real-time CNN (Arriaga, Valdenegro-Toro &
  Plöger, 2017), a faithful port of the Keras network in the MIT ``fer`` package; its
  defaults reproduce that network exactly, ``base_width`` widens it.
* :class:`FaceResNet`: torchvision's ResNet-18/50 (random init, never downloaded) with a
  stem for 1 or 3 input channels and a ``num_classes`` head.
* :class:`VGG13`: the VGG-13 variant of FER+ (Barsoum et al., ICMI 2016) with batch norm.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# Keras BatchNormalization's default epsilon (PyTorch's is 1e-5).
KERAS_BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D: depthwise 3×3 then pointwise 1×1, no bias, 'same' padding."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SamePadMaxPool(nn.Module):
    """Keras MaxPooling2D(3, strides=2, padding='same'): TensorFlow pads the extra row and
    column at the end (bottom/right), where PyTorch would pad symmetrically."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        pad_h = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
        pad_w = max((-(-w // 2) - 1) * 2 + 3 - w, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2],
                  value=float("-inf"))
        return F.max_pool2d(x, 3, 2)


class XceptionModule(nn.Module):
    """Residual block: two separable convs + pool, added to a strided 1×1 projection."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout))
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)
        self.pool = SamePadMaxPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.residual(x)


class MiniXception(nn.Module):
    """Depthwise-separable real-time CNN; ~57k parameters with the defaults.

    A stem of two valid 3×3 convolutions (``base_width`` channels), four Xception modules
    (2, 4, 8, 16 × ``base_width`` channels, each halving the resolution) and a 3×3
    convolution to ``num_classes`` maps, averaged to logits.  The features are the global
    average of the last module's 16 × ``base_width`` channels.  The defaults (1 grey input
    channel, ``base_width=8``) are the ``fer`` package's network: 64×64 input in [-1, 1].
    """

    INPUT_CONV = "stem.0.weight"
    HEAD = "classifier."

    def __init__(self, num_classes: int = 7, in_channels: int = 1, base_width: int = 8):
        super().__init__()
        w = base_width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, bias=False), _bn(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, bias=False), _bn(w), nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            XceptionModule(w, 2 * w), XceptionModule(2 * w, 4 * w),
            XceptionModule(4 * w, 8 * w), XceptionModule(8 * w, 16 * w),
        )
        self.classifier = nn.Conv2d(16 * w, num_classes, 3, padding=1)
        self.feature_dim = 16 * w

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.blocks(self.stem(x))
        logits = self.classifier(trunk).mean(dim=(2, 3))
        return logits, trunk.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class FaceResNet(ResNet):
    """torchvision ResNet-18 (``depth=18``) or ResNet-50 (``depth=50``) for face crops.

    Built with torchvision's own constructor and initialisation (no weights are downloaded),
    so its state-dict keys are torchvision's: an ImageNet state dict loads into it, apart
    from ``fc`` (``num_classes`` outputs here).  ``stem="standard"`` keeps torchvision's 7×7
    stride-2 convolution and max-pool (input /4), right for 112 px crops; ``"small"`` uses a
    3×3 stride-1 convolution without max-pool, keeping 4× the resolution for faces of 64 px
    or less (as FER2013 ResNets do) at ~16× the stem-to-layer4 compute.  The features are the
    globally average-pooled output of ``layer4`` (512 for ResNet-18, 2048 for ResNet-50).
    """

    INPUT_CONV = "conv1.weight"
    HEAD = "fc."
    LAYERS: ClassVar[dict[int, tuple[type[nn.Module], list[int]]]] = {
        18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}
    STEMS: ClassVar[tuple[str, ...]] = ("standard", "small")

    def __init__(self, depth: int, num_classes: int = 7, in_channels: int = 3,
                 stem: str = "standard"):
        if depth not in self.LAYERS:
            raise ValueError(f"ResNet depth {depth} is not one of {sorted(self.LAYERS)}")
        if stem not in self.STEMS:
            raise ValueError(f"ResNet stem {stem!r} is not one of {self.STEMS}")
        block, layers = self.LAYERS[depth]
        super().__init__(block, layers, num_classes=num_classes)
        if stem == "small":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        # The same initialisation torchvision gives every convolution.
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        features = torch.flatten(self.avgpool(x), 1)
        return self.fc(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class VGG13(nn.Module):
    """The FER+ VGG-13 (10 convolutions, 3 fully connected layers) with batch norm.

    Four stages of 3×3 convolution + BN + ReLU (``widths`` channels, ``depths`` convolutions
    each, FER+'s 64-128-256-256 × 2-2-3-3), each closed by a 2×2 max-pool and dropout
    ``conv_dropout``; the last map is average-pooled to 4×4 (a no-op at FER+'s 64 px input,
    so any input of at least 16 px gives the same head), then two ``hidden``-unit fully
    connected layers with ReLU and dropout ``dropout``, and the classifier.  The features are
    the second hidden layer's activations.  ~8.8M parameters with the defaults.
    """

    INPUT_CONV = "stages.0.0.weight"
    HEAD = "classifier."
    POOLED = 4

    def __init__(self, num_classes: int = 7, in_channels: int = 1,
                 widths: tuple[int, ...] = (64, 128, 256, 256),
                 depths: tuple[int, ...] = (2, 2, 3, 3), hidden: int = 1024,
                 dropout: float = 0.5, conv_dropout: float = 0.25):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"VGG widths {widths} and depths {depths} differ in length")
        stages, cin = [], in_channels
        for width, depth in zip(widths, depths, strict=True):
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                cin = width
            layers += [nn.MaxPool2d(2), nn.Dropout(conv_dropout)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(self.POOLED)
        self.hidden = nn.Sequential(
            nn.Linear(cin * self.POOLED**2, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.hidden(torch.flatten(self.pool(self.stages(x)), 1))
        return self.classifier(self.dropout(features)), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
