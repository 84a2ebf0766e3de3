"""Foreground masks from score maps, with the same cut rule as the boxes.

``u8 = uint8(map * 255)``; a pixel is foreground when ``u8 > int(t * max(u8))``, the same rule
``cv2.threshold`` applies before wsolevaluation's box fitting. A mask therefore covers exactly
the pixels whose contours give the boxes at that threshold.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from wsol.localize.levels import threshold_levels, to_uint8_torch


def masks_from_maps(maps: Union[torch.Tensor, np.ndarray], threshold: Union[float, Sequence[float], torch.Tensor]) -> torch.Tensor:
    """N×H×W bool masks: ``u8 > int(threshold * max(u8))`` per map (maps in [0, 1]).

    ``threshold`` is one fraction for all maps or one per map. An all-zero map gives an empty
    mask at any threshold ≥ 0. The result is on the maps' device.
    """
    m = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    u8 = to_uint8_torch(m)
    n = u8.shape[0]
    th = torch.as_tensor(threshold, dtype=torch.float64).reshape(-1)
    if th.numel() == 1:
        th = th.expand(n)
    if th.numel() != n:
        raise ValueError(f"got {th.numel()} thresholds for {n} maps")
    mx = u8.reshape(n, -1).amax(dim=1).cpu().numpy()
    level = torch.from_numpy(threshold_levels(mx, th.numpy()).diagonal().copy()).to(device=u8.device, dtype=torch.int16)
    return u8.to(torch.int16) > level.view(n, 1, 1)


__all__ = ["masks_from_maps"]
