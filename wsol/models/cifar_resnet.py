"""The common CIFAR ResNet-18 layout (3×3 stem, no max-pool, ``shortcut`` = conv + BN, head ``linear``).

It matches the real weights shipped inside ``pyautoattack`` (``examples/model_test.pt``). There is no
normalization inside: the model reads [0, 1] images as they are, as those weights were trained.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Post-activation basic block; a projection shortcut when the width or stride changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        self.relu = nn.ReLU()  # a module, so attacks can switch it to softplus_β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Four stages of basic blocks (64, 128, 256, 512 channels), 4×4 average pool, linear head."""

    def __init__(self, num_blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(512, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


def cifar_resnet18(num_classes: int = 10) -> CifarResNet:
    """ResNet-18 for 32×32 inputs (11,173,962 parameters with 10 classes)."""
    return CifarResNet((2, 2, 2, 2), num_classes)
