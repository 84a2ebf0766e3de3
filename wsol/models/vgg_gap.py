"""VGG16-GAP (the CAM/ADL variant) and a small CNN for fast tests and demos."""
from __future__ import annotations

import torch
import torch.nn as nn

from wsol.models.classifier import GapNet

# torchvision's VGG16 configuration; indices of ``features`` match its state-dict keys.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16GAP(GapNet):
    """VGG16 convolutional trunk without the last pool, a 3×3 conv to 1024 + ReLU, GAP and a linear head."""

    def __init__(self, num_classes: int = 200) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.extra = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=False))
        self.fc = nn.Linear(1024, num_classes)
        self.num_features = 1024
        for m in self.extra.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extra(self.features(x))


class SmallCNN(GapNet):
    """Five 3×3 convolutions (two with stride 2), optional batch norm, GAP and a linear head.

    Without batch norm (``small-cnn``) it is the model for exact distributed/unit tests; with it
    (``small-cnn-bn``) it trains on the synthetic set in minutes. Kaiming init keeps activations
    from shrinking layer by layer.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, batch_norm: bool = False) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch, stride in ((w, 1), (w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1)):
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU())
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * w, num_classes)
        self.num_features = 4 * w
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
