"""Overlay figures are real PNGs with the boxes drawn in the expected colours."""
from __future__ import annotations

import numpy as np
import torch

from wsol.report import overlay_grid


def test_overlay_grid_draws_gt_red_and_prediction_green(tmp_path) -> None:
    import matplotlib.image as mpimg

    images = torch.full((2, 3, 32, 32), 0.5)
    maps = torch.zeros(2, 32, 32)
    gt = [torch.tensor([[4.0, 4.0, 28.0, 28.0]]), torch.zeros(0, 4)]
    pred = [torch.zeros(0, 4), torch.tensor([[2.0, 2.0, 20.0, 20.0]])]
    out = overlay_grid(images, tmp_path / "grid.png", maps=maps, gt_boxes=gt, pred_boxes=pred, titles=["a", "b"])
    pixels = mpimg.imread(out)[..., :3]
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.2) & (pixels[..., 2] < 0.2)
    green = (pixels[..., 1] > 0.9) & (pixels[..., 0] < 0.2) & (pixels[..., 2] < 0.2)
    assert red.sum() > 20 and green.sum() > 20
    assert np.nonzero(red)[1].mean() < np.nonzero(green)[1].mean()
