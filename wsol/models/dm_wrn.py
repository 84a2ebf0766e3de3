"""DeepMind-style CIFAR WideResNets with their checkpoints' exact layout (RobustBench's SiLU WRNs, RaWRN).

They differ from :mod:`wsol.models.wrn` in ways that change the logits: TF-"SAME" padding (an asymmetric
``F.pad(x, (0, 1, 0, 1))`` before each padding-0 stride-2 convolution), the shortcut of a widening block
reads the *activated* input, and the CIFAR-10 normalization lives inside as non-persistent buffers, so the
state dict holds only the trained tensors. Input: [0, 1] images of 32×32; output: logits.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class SqueezeExcitation(nn.Module):
    """Channel gate ``x · sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1×1 convolutions named fc1 / fc2."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.relu = nn.ReLU()  # a module, so attacks can switch it to softplus_β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class DMBlock(nn.Module):
    """Pre-activation basic block; an optional squeeze-excitation gate follows the second convolution."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        activation: Type[nn.Module],
        se_ratio: float | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"unsupported stride {stride}")
        self.stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.relu_0 = activation()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.relu_1 = activation()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if in_planes != out_planes else None
        self.se = SqueezeExcitation(out_planes, int(round(se_ratio * out_planes))) if se_ratio else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu_0(self.batchnorm_0(x))
        pad = (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1)
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(F.pad(act, pad)))))
        if self.se is not None:
            out = self.se(out)
        residual = x if self.shortcut is None else self.shortcut(act)
        return residual + out


class DMBlockGroup(nn.Module):
    """``num_blocks`` blocks under ``.block``; only the first one changes width or stride."""

    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int, **block_kw) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(
                DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, **block_kw)
                for i in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMStyleWideResNet(nn.Module):
    """Stem, three block groups (strides 1, 2, 2), BN-activation, 8×8 average pool, linear ``logits``."""

    def __init__(
        self,
        stem_width: int,
        depths: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        activation: Type[nn.Module] = nn.SiLU,
        se_ratio: float | None = None,
        bn_momentum: float = 0.1,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        block_kw = dict(activation=activation, se_ratio=se_ratio, bn_momentum=bn_momentum)
        self.init_conv = nn.Conv2d(len(mean), stem_width, 3, stride=1, padding=1, bias=False)
        ins = [stem_width, *widths[:-1]]
        self.layer = nn.Sequential(
            *(DMBlockGroup(n, i, o, s, **block_kw) for n, i, o, s in zip(depths, ins, widths, (1, 2, 2)))
        )
        self.batchnorm = nn.BatchNorm2d(widths[-1], momentum=bn_momentum)
        self.relu = activation()
        self.logits = nn.Linear(widths[-1], num_classes)

    def forward_with_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Logits and the outputs of the first two block groups (the features a mixing network reads)."""
        feat1 = self.layer[0](self.init_conv((x - self.mean) / self.std))
        feat2 = self.layer[1](feat1)
        out = self.relu(self.batchnorm(self.layer[2](feat2)))
        out = F.avg_pool2d(out, 8).flatten(1)
        return self.logits(out), (feat1, feat2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def dm_wide_resnet(depth: int, width: int, num_classes: int = 10, activation: Type[nn.Module] = nn.SiLU) -> DMStyleWideResNet:
    """The DeepMind WRN-``depth``-``width`` (``(depth - 4) / 6`` blocks a group, widths 16·k, 32·k, 64·k)."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
    n = (depth - 4) // 6
    return DMStyleWideResNet(16, (n, n, n), (16 * width, 32 * width, 64 * width), num_classes, activation)


def ra_wide_resnet_70_16(num_classes: int = 10) -> DMStyleWideResNet:
    """Peng et al.'s RaWideResNet-70-16: stem 96, depths 30/31/10, widths 216/432/864, SiLU, SE 0.25 (ReLU)."""
    return DMStyleWideResNet(
        96, (30, 31, 10), (216, 432, 864), num_classes, nn.SiLU, se_ratio=0.25, bn_momentum=0.01
    )
