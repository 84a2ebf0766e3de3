"""Big Transfer (BiT) ResNet-v2: pre-activation bottlenecks, GroupNorm(32) and weight-standardized convolutions.

The layout of Bai et al.'s "standard" CIFAR-10 model (BiT-M-R152x2; the mixture feeds it 128×128 inputs):
``root.conv`` (7×7, stride 2) → pad 1 → 3×3 max-pool; ``body.blockK.unitNN``; ``head.gn`` → ReLU →
global average → 1×1 ``head.conv``. Inputs are normalized inside with mean = std = 0.5.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

BIT_MEAN = (0.5, 0.5, 0.5)
BIT_STD = (0.5, 0.5, 0.5)


class StdConv2d(nn.Conv2d):
    """Convolution whose kernel is standardized (zero mean, unit variance per output channel) at each call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-10)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PreActBottleneck(nn.Module):
    """GN-ReLU-1×1, GN-ReLU-3×3 (carries the stride), GN-ReLU-1×1; the projection reads the first activation."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cin)
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(32, cmid)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, 1, stride=stride, bias=False)
        self.relu = nn.ReLU()  # a module, so attacks can switch it to softplus_β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.gn1(x))
        residual = self.downsample(act) if hasattr(self, "downsample") else x
        out = self.conv1(act)
        out = self.conv2(self.relu(self.gn2(out)))
        out = self.conv3(self.relu(self.gn3(out)))
        return out + residual


class BiTResNetV2(nn.Module):
    """BiT ResNet-v2 with ``block_units`` bottlenecks a stage and channel multiplier ``width``."""

    def __init__(self, block_units: Sequence[int], width: int, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(BIT_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(BIT_STD).view(3, 1, 1), persistent=False)
        self.root = nn.Sequential(
            OrderedDict(
                conv=StdConv2d(3, 64 * width, 7, stride=2, padding=3, bias=False),
                pad=nn.ConstantPad2d(1, 0.0),
                pool=nn.MaxPool2d(3, stride=2, padding=0),
            )
        )
        stages = []
        cin = 64 * width
        for k, units in enumerate(block_units):
            cmid = 64 * width * 2**k
            cout = 4 * cmid
            stage = OrderedDict()
            for u in range(units):
                stride = 2 if (u == 0 and k > 0) else 1
                stage[f"unit{u + 1:02d}"] = PreActBottleneck(cin if u == 0 else cout, cout, cmid, stride)
            stages.append((f"block{k + 1}", nn.Sequential(stage)))
            cin = cout
        self.body = nn.Sequential(OrderedDict(stages))
        self.head = nn.Sequential(
            OrderedDict(
                gn=nn.GroupNorm(32, cin),
                relu=nn.ReLU(),
                avg=nn.AdaptiveAvgPool2d(1),
                conv=nn.Conv2d(cin, num_classes, 1, bias=True),
            )
        )

    def forward_with_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Logits and the outputs of the first two stages (the features a mixing network reads)."""
        feat1 = self.body[0](self.root((x - self.mean) / (self.std + 1e-8)))
        feat2 = self.body[1](feat1)
        out = self.head(self.body[3](self.body[2](feat2)))
        return out.flatten(1), (feat1, feat2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def bit_resnet152x2(num_classes: int = 10) -> BiTResNetV2:
    """BiT-M-R152x2: 3, 8, 36, 3 bottlenecks, width ×2."""
    return BiTResNetV2((3, 8, 36, 3), 2, num_classes)
