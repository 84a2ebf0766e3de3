"""Bai et al.'s adaptive mixture (Bai2023Improving_edm): a standard model, a robust model and a mixing network.

For each image the mixing network reads both models' early features and predicts a logit ``g``; after a
fixed (affine-free) batch norm, ``g · gamma_scale + gamma_bias`` goes through a sigmoid and is squeezed
into ``[alpha_bias, alpha_bias + alpha_scale]``, giving the weight ``α`` of the robust model. The output
is ``log((1 - α) softmax(s_std · z_std) + α softmax(s_rob · z_rob))``: log-probabilities, used as logits.
The standard model sees the image resized to 128×128 (bilinear), the robust one the 32×32 original.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.models.bit_resnet import BiTResNetV2, bit_resnet152x2
from wsol.models.dm_wrn import DMStyleWideResNet, dm_wide_resnet


class MixPreActBlock(nn.Module):
    """BN-ReLU-3×3, BN-ReLU-3×3; the shortcut (a 1×1 projection when shapes change) reads the first activation."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))
        self.relu = nn.ReLU()  # a module, so attacks can switch it to softplus_β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        return self.conv2(self.relu(self.bn2(self.conv1(act)))) + self.shortcut(act)


class MixingNet(nn.Module):
    """Reads the concatenated first-stage features (stride-2 stage) plus a 1×1 projection of the second-stage
    ones, then two more stride-2 stages, a global average and a bias-free linear map to one logit.

    ``first`` / ``second``: the channel counts of each base model's first and second feature maps;
    ``widths``: the output widths of the three stages (two blocks each).
    """

    def __init__(self, first: Sequence[int], second: Sequence[int], widths: Sequence[int]) -> None:
        super().__init__()
        in_planes = sum(first)
        stages = []
        for width in widths:
            stages.append(nn.Sequential(MixPreActBlock(in_planes, width, 2), MixPreActBlock(width, width, 1)))
            in_planes = width
        self.layers = nn.ModuleList(stages)
        self.linear = nn.Linear(widths[-1], 1, bias=False)
        self.conv1x1 = nn.Conv2d(sum(second), widths[0], 1, stride=1, bias=False)

    def forward(self, feats1: Sequence[torch.Tensor], feats2: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = self.layers[0](torch.cat(list(feats1), dim=1)) + self.conv1x1(torch.cat(list(feats2), dim=1))
        for stage in self.layers[1:]:
            feats = stage(feats)
        return self.linear(feats.mean(dim=(2, 3)))


@dataclass(frozen=True)
class MixingSettings:
    """Evaluation constants of a mixture (not stored in its checkpoints)."""

    gamma_scale: float
    gamma_bias: float
    alpha_scale: float
    alpha_bias: float
    std_scale: float
    rob_scale: float
    std_size: int = 128


# Bai2023Improving_edm on CIFAR-10 (its fixed gamma of 3 is inactive: the mixing network sets gamma).
BAI2023_EDM_CIFAR10 = MixingSettings(gamma_scale=2.0, gamma_bias=1.05, alpha_scale=0.04, alpha_bias=0.96, std_scale=1.2, rob_scale=0.3)


class MixedClassifier(nn.Module):
    """The mixture of ``std_model`` and ``rob_model`` weighted per image by ``policy_net`` (evaluation rule)."""

    def __init__(
        self,
        std_model: BiTResNetV2,
        rob_model: DMStyleWideResNet,
        policy_net: MixingNet,
        settings: MixingSettings,
    ) -> None:
        super().__init__()
        self.std_model = std_model
        self.rob_model = rob_model
        self.policy_net = policy_net
        self.bn = nn.BatchNorm1d(1, affine=False, momentum=0.01)
        self.settings = settings

    def robust_weight(self, feats_std: Tuple[torch.Tensor, ...], feats_rob: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """α per image (N×1): the weight of the robust model's probabilities."""
        s = self.settings
        gamma = self.bn(self.policy_net((feats_std[0], feats_rob[0]), (feats_std[1], feats_rob[1])))
        return torch.sigmoid(gamma * s.gamma_scale + s.gamma_bias) * s.alpha_scale + s.alpha_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        resized = F.interpolate(x, size=(s.std_size, s.std_size), mode="bilinear")
        logits_std, feats_std = self.std_model.forward_with_features(resized)
        logits_rob, feats_rob = self.rob_model.forward_with_features(x)
        alpha = self.robust_weight(feats_std, feats_rob)
        probs = (1 - alpha) * F.softmax(logits_std * s.std_scale, dim=1) + alpha * F.softmax(logits_rob * s.rob_scale, dim=1)
        return torch.log(probs)


def bai2023_edm(num_classes: int = 10) -> MixedClassifier:
    """BiT-M-R152x2 (standard) + WRN-70-16 SiLU (robust) + mixing network, CIFAR-10 settings."""
    return MixedClassifier(
        bit_resnet152x2(num_classes),
        dm_wide_resnet(70, 16, num_classes),
        MixingNet(first=(512, 256), second=(1024, 512), widths=(512, 768, 1024)),
        BAI2023_EDM_CIFAR10,
    )
