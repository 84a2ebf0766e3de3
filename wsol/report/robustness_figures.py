"""Per-class robustness figures: accuracy vs ε per class, and a heatmap of per-class drops."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from wsol.report.figures import pyplot, save_figure


def plot_class_accuracy_vs_eps(
    acc: torch.Tensor,
    eps_labels: Sequence[Union[int, float, str]],
    path: Union[str, Path],
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
) -> Path:
    """One line a class: accuracy (E×C, fractions) against the ε grid; written atomically as PNG."""
    plt = pyplot()
    names = list(class_names) if class_names is not None else [str(c) for c in range(acc.shape[1])]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = list(range(len(eps_labels)))
    for c, name in enumerate(names):
        ax.plot(xs, (acc[:, c] * 100).tolist(), marker="o", label=name)
    ax.set_xticks(xs, [str(e) for e in eps_labels])
    ax.set_xlabel("ε (×1/255)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=2)
    return save_figure(fig, path, dpi=120)


def plot_drop_heatmap(
    drops: torch.Tensor,
    row_labels: Sequence[str],
    path: Union[str, Path],
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
) -> Path:
    """Heatmap of per-class drops (rows: models or ε steps, columns: classes, values: fractions)."""
    plt = pyplot()
    names = list(class_names) if class_names is not None else [str(c) for c in range(drops.shape[1])]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(names), 1 + 0.4 * len(row_labels)))
    values = (drops * 100).numpy()
    image = ax.imshow(values, cmap="Reds_r", aspect="auto")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="drop (%)")
    ax.set_title(title)
    return save_figure(fig, path, dpi=120)


__all__ = ["plot_class_accuracy_vs_eps", "plot_drop_heatmap"]
