"""Per-class robustness figures: accuracy vs ε per class, and a heatmap of per-class drops.

Values are fractions, as in the run's tables. Each figure has a ``draw_*`` function that returns the
matplotlib Figure (to inspect or restyle) and a ``plot_*`` function that writes it as PNG.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from wsol.report.figures import class_tick_labels, pyplot, save_figure

LINE_STYLES = ("-", "--", ":", "-.")
"""Line style per block of ten classes: the default colour cycle repeats after ten."""
LEGEND_CLASSES = 20
"""Most classes named in a legend; beyond, lines are coloured by class index."""
CELL_INCHES = (0.6, 0.12)
"""Heatmap column width with its value written in each cell (up to 30 classes), and without (more)."""
EPS_AXIS = "ε (×1/255)"
"""The ε axis title of an ℓ∞ sweep given as x of ε = x/255; an ℓ2 sweep of radii passes its own."""


def _names(class_names: Optional[Sequence[str]], count: int) -> list:
    return list(class_names) if class_names is not None else [str(c) for c in range(count)]


def draw_class_accuracy_vs_eps(
    acc: torch.Tensor,
    eps_labels: Sequence[Union[int, float, str]],
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
    eps_axis: str = EPS_AXIS,
) -> Any:
    """One line a class: accuracy (E×C, fractions) against ε (in the unit ``eps_axis`` names, on a linear axis). Up to
    :data:`LEGEND_CLASSES` classes are named in a legend right of the axes (never over a line); more are
    coloured by class index with a colour bar, since a legend that long is unreadable. Returns the Figure."""
    plt = pyplot()
    names = _names(class_names, acc.shape[1])
    many = len(names) > LEGEND_CLASSES
    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    try:
        xs = [float(e) for e in eps_labels]
    except ValueError:
        xs = list(range(len(eps_labels)))
    cmap = plt.get_cmap("viridis")
    for c, name in enumerate(names):
        style = {"color": cmap(c / max(1, len(names) - 1)), "linewidth": 0.8, "alpha": 0.7} if many else \
            {"marker": "o", "linestyle": LINE_STYLES[(c // 10) % len(LINE_STYLES)]}
        empty = not torch.isfinite(acc[:, c]).any()  # no test sample of the class drawn: a legend entry without a line
        ax.plot(xs, acc[:, c].tolist(), label=f"{name} (no sample)" if empty else name, **style)
    ax.set_xticks(xs, [f"{e:g}" if isinstance(e, float) else str(e) for e in eps_labels])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(eps_axis)
    ax.set_ylabel("robust accuracy (fraction)")
    ax.set_title(title or "robust accuracy per class against ε")
    ax.grid(alpha=0.3)
    if many:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig.colorbar(ScalarMappable(Normalize(0, len(names) - 1), cmap=cmap), ax=ax, label="class index (names in the tables)")
    else:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title="class")
    return fig


def plot_class_accuracy_vs_eps(
    acc: torch.Tensor,
    eps_labels: Sequence[Union[int, float, str]],
    path: Union[str, Path],
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
    eps_axis: str = EPS_AXIS,
) -> Path:
    """:func:`draw_class_accuracy_vs_eps` written atomically as PNG to ``path``."""
    return save_figure(draw_class_accuracy_vs_eps(acc, eps_labels, class_names, title, eps_axis), path, dpi=120)


def draw_drop_heatmap(
    drops: torch.Tensor,
    row_labels: Sequence[str],
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
    row_axis: str = "",
) -> Any:
    """Heatmap of per-class accuracy changes (rows: models or ε steps, columns: classes, values: fractions,
    negative = lost), with a colour bar from the largest loss to 0 and each cell's value written in it."""
    plt = pyplot()
    names = _names(class_names, drops.shape[1])
    written = len(names) <= 30
    fig, ax = plt.subplots(figsize=(2.5 + CELL_INCHES[0 if written else 1] * len(names), 1.8 + 0.4 * len(row_labels)), layout="constrained")
    values = drops.detach().float().cpu().numpy()
    finite = values[np.isfinite(values)]
    low = min(float(finite.min()) if finite.size else 0.0, -0.01)
    image = ax.imshow(values, cmap="Reds_r", aspect="auto", vmin=low, vmax=0.0)
    class_tick_labels(ax, names)
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    ax.set_xlabel("class" + (" (–: no test sample of it among those drawn)" if not np.isfinite(values).all() else ""))
    if row_axis:
        ax.set_ylabel(row_axis)
    if written:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                dark = np.isfinite(values[i, j]) and values[i, j] < low / 2
                text = f"{values[i, j]:.2f}" if np.isfinite(values[i, j]) else "–"  # as the tables write a class without samples
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="accuracy change (fraction)")
    ax.set_title(title or "accuracy change per class (negative = lost)")
    return fig


def plot_drop_heatmap(
    drops: torch.Tensor,
    row_labels: Sequence[str],
    path: Union[str, Path],
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
    row_axis: str = "",
) -> Path:
    """:func:`draw_drop_heatmap` written atomically as PNG to ``path``."""
    return save_figure(draw_drop_heatmap(drops, row_labels, class_names, title, row_axis), path, dpi=120)


__all__ = ["EPS_AXIS", "draw_class_accuracy_vs_eps", "draw_drop_heatmap", "plot_class_accuracy_vs_eps", "plot_drop_heatmap"]
