"""Classifier: Normalize → backbone → head, with uniform access to features and head weights;
and the GAP head the in-house backbones share."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class GapNet(nn.Module):
    """Base of the in-house backbones: global average pooling and a linear ``fc`` head.

    Subclasses define ``forward_features`` (the last feature map) and ``fc``; the head, its
    weights (the CAM weights) and ``forward`` are defined here once.
    """

    fc: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of a B×C×h×w feature map: spatial mean, then ``fc``."""
        return self.fc(features.mean(dim=(2, 3)))

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class Classifier(nn.Module):
    """Wraps a network exposing ``forward_features``/``forward_head``/``get_classifier``.

    Inputs are images in [0, 1]; the dataset's mean/std normalization happens inside, so every
    attack epsilon and every input gradient is in pixel units.
    """

    def __init__(
        self,
        net: nn.Module,
        arch: str,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int,
        feature_layer_name: str,
    ) -> None:
        super().__init__()
        self.net = net
        self.feature_layer_name = feature_layer_name
        self.arch = arch
        self.num_classes = num_classes
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] images to the backbone's normalized input."""
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map (B×C×h×w) of [0, 1] images."""
        return self.net.forward_features(self.normalize(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from a feature map: global average pooling and the linear classifier."""
        return self.net.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def classifier_weight(self) -> torch.Tensor:
        """num_classes × C weights of the linear head (the CAM weights)."""
        return self.net.get_classifier().weight

    @property
    def feature_layer(self) -> nn.Module:
        """The module whose output is the last feature map (for hook-based tools)."""
        return self.net.get_submodule(self.feature_layer_name)

    @property
    def norm_stats(self) -> tuple[list[float], list[float]]:
        return self.mean.flatten().tolist(), self.std.flatten().tolist()

