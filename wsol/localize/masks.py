"""Foreground masks from score maps, with the same cut rule as the boxes.

``u8 = uint8(map * 255)``; a pixel is foreground when ``u8 > int(t * max(u8))``, the same rule
``cv2.threshold`` applies before wsolevaluation's box fitting. A mask therefore covers exactly
the pixels whose contours give the boxes at that threshold.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch


def maps_to_uint8(maps: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`wsol.localize.boxes.to_uint8`: NaN → 0, clip to [0, 1], ``trunc(m * 255)``."""
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
    if maps.dim() != 3:
        raise ValueError(f"maps must be N×H×W or H×W, got shape {tuple(maps.shape)}")
    if maps.dtype == torch.uint8:
        return maps
    x = maps if maps.is_floating_point() else maps.float()
    x = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    return (x * 255).to(torch.uint8)


def masks_from_maps(maps: Union[torch.Tensor, np.ndarray], threshold: Union[float, Sequence[float], torch.Tensor]) -> torch.Tensor:
    """N×H×W bool masks: ``u8 > int(threshold * max(u8))`` per map (maps in [0, 1]).

    ``threshold`` is one fraction for all maps or one per map. An all-zero map gives an empty
    mask at any threshold ≥ 0. The result is on the maps' device.
    """
    m = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    u8 = maps_to_uint8(m)
    n = u8.shape[0]
    th = torch.as_tensor(threshold, dtype=torch.float64).reshape(-1)
    if th.numel() == 1:
        th = th.expand(n)
    if th.numel() != n:
        raise ValueError(f"got {th.numel()} thresholds for {n} maps")
    mx = u8.reshape(n, -1).amax(dim=1).to(device="cpu", dtype=torch.float64)
    level = torch.trunc(th * mx).clamp(min=-1).to(torch.int16).to(u8.device)
    return u8.to(torch.int16) > level.view(n, 1, 1)


__all__ = ["maps_to_uint8", "masks_from_maps"]
