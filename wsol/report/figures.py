"""Overlay figures in the style of the ART paper's Fig. 5: image, heatmap, GT box, predicted box."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from wsol.utils.io import atomic_path

GT_COLOR = "red"
PRED_COLOR = "lime"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Union[str, Path], dpi: int = 100) -> Path:
    """Lay out ``fig``, write it atomically as PNG to ``path`` and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def _to_numpy_image(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _draw_boxes(ax, boxes: Optional[torch.Tensor], color: str) -> None:
    from matplotlib.patches import Rectangle

    if boxes is None:
        return
    for x1, y1, x2, y2 in boxes.reshape(-1, 4).tolist():
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5))


def overlay_grid(
    images: Union[torch.Tensor, Sequence[torch.Tensor]],
    out: Path,
    maps: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None,
    gt_boxes: Optional[Sequence[torch.Tensor]] = None,
    pred_boxes: Optional[Sequence[torch.Tensor]] = None,
    titles: Optional[Sequence[str]] = None,
    masks: Optional[Union[torch.Tensor, Sequence[Optional[torch.Tensor]]]] = None,
    columns: int = 8,
    alpha: float = 0.5,
) -> Path:
    """Draw each image with its heatmap (jet, ``alpha``), GT boxes in red and predictions in green.

    The one image-grid renderer (model overlays and dataset previews). images: N×3×H×W in
    [0, 1], or N 3×H×W tensors of any sizes; maps: N×H×W in [0, 1]; boxes: per-image K×4 xyxy
    pixels; masks: per-image H×W bool (or None) drawn as a contour. Writes a PNG atomically
    and returns its path.
    """
    plt = pyplot()
    n = len(images)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(_to_numpy_image(images[i]), interpolation="nearest")
        if maps is not None:
            ax.imshow(maps[i].detach().float().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
        if masks is not None and masks[i] is not None and bool(masks[i].any()):
            ax.contour(masks[i].cpu().numpy().astype(float), levels=[0.5], colors="white", linewidths=0.8)
        _draw_boxes(ax, gt_boxes[i] if gt_boxes is not None else None, GT_COLOR)
        _draw_boxes(ax, pred_boxes[i] if pred_boxes is not None else None, PRED_COLOR)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    return save_figure(fig, out)
