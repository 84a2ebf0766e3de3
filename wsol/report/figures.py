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
MASK_COLOR = "white"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Union[str, Path], dpi: int = 100) -> Path:
    """Write ``fig`` atomically as PNG to ``path`` and close it; the saved area grows to hold every label,
    legend and colour bar, so nothing is clipped at the edges."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    pyplot().close(fig)
    return Path(path)


def class_tick_labels(ax: Any, names: Sequence[str]) -> None:
    """Class names under the x axis, one tick a class, slanted when they would otherwise run into each other."""
    slant = len(names) > 1 and max(len(n) for n in names) > 3
    upright = len(names) > 30
    ax.set_xticks(range(len(names)), list(names), rotation=90 if upright else 45 if slant else 0,
                  ha="center" if upright or not slant else "right", rotation_mode="default" if upright else "anchor",
                  fontsize=5 if upright else 8 if len(names) > 20 else 10)


def _to_numpy_image(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _draw_boxes(ax, boxes: Optional[torch.Tensor], color: str) -> None:
    from matplotlib.patches import Rectangle

    if boxes is None:
        return
    for x1, y1, x2, y2 in boxes.reshape(-1, 4).tolist():
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5))


def draw_overlay_grid(
    images: Union[torch.Tensor, Sequence[torch.Tensor]],
    maps: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None,
    gt_boxes: Optional[Sequence[torch.Tensor]] = None,
    pred_boxes: Optional[Sequence[torch.Tensor]] = None,
    titles: Optional[Sequence[str]] = None,
    masks: Optional[Union[torch.Tensor, Sequence[Optional[torch.Tensor]]]] = None,
    columns: int = 8,
    alpha: float = 0.5,
    title: str = "",
    pred_label: str = "predicted box",
) -> Any:
    """Draw each image with its heatmap (jet, ``alpha``), GT boxes in red, predictions in green and GT
    masks as a white outline; returns the Figure.

    The one image-grid renderer (model overlays and dataset previews). images: N×3×H×W in
    [0, 1], or N 3×H×W tensors of any sizes; maps: N×H×W in [0, 1]; boxes: per-image K×4 xyxy
    pixels; masks: per-image H×W bool (or None). ``title`` goes above the grid; a legend below
    names what each colour is (``pred_label`` for the green boxes) and, with maps, a colour bar
    gives the heatmap's scale.
    """
    from matplotlib.lines import Line2D

    plt = pyplot()
    n = len(images)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols + 0.6, 2.1 * rows + 0.9), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(_to_numpy_image(images[i]), interpolation="nearest")
        if maps is not None:
            ax.imshow(maps[i].detach().float().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
        if masks is not None and masks[i] is not None and bool(masks[i].any()):
            ax.contour(masks[i].cpu().numpy().astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=0.8)
        _draw_boxes(ax, gt_boxes[i] if gt_boxes is not None else None, GT_COLOR)
        _draw_boxes(ax, pred_boxes[i] if pred_boxes is not None else None, PRED_COLOR)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    handles = [Line2D([], [], color=GT_COLOR, linewidth=1.5, label="ground-truth box")]
    if pred_boxes is not None:
        handles.append(Line2D([], [], color=PRED_COLOR, linewidth=1.5, label=pred_label))
    if masks is not None and any(m is not None and bool(m.any()) for m in masks):
        handles.append(Line2D([], [], color=MASK_COLOR, linewidth=1.5, label="ground-truth mask"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, facecolor="0.7", framealpha=1.0)
    if maps is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap="jet"), ax=axes.ravel().tolist(), shrink=0.8, aspect=30,
                     label="attribution (0–1)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
