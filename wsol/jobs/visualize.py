"""The visualization job: a few seeded images with heatmap, GT box and predicted box in one PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from wsol.config import LocalizeConfig
from wsol.data import collate
from wsol.jobs.localize import check_settings, checkpoint_dataset, compute_maps
from wsol.jobs.runfolder import fewer_images_note, note
from wsol.localize.boxes import boxes_from_maps
from wsol.models import load_model
from wsol.utils.device import select_device


def run_visualize(
    checkpoint: Path,
    dataset: str,
    root: Path,
    out: Path,
    settings: Optional[LocalizeConfig] = None,
    n: int = 16,
    split: str = "test",
    seed: int = 0,
    device: Optional[str] = None,
    dataset_options: Optional[Dict[str, Any]] = None,
) -> Path:
    """Draw ``n`` seeded random images with heatmap, GT box (red) and the box at ``settings.threshold``
    (green); ``settings`` defaults to :class:`LocalizeConfig`'s defaults; ``dataset_options`` go to the loader."""
    from wsol.report.figures import draw_overlay_grid, save_figure

    settings = settings or LocalizeConfig()
    check_settings(settings)
    dev = select_device(device)
    model = load_model(checkpoint).to(dev).eval()
    data = checkpoint_dataset(checkpoint, model, dataset, root, split, **(dataset_options or {}))
    order = np.random.default_rng(seed).permutation(len(data))[: max(1, n)]
    batch = collate([data[int(i)] for i in order]).to(dev)  # a corrupt image is then the one line printed
    note(fewer_images_note(split, len(data), n))
    with torch.no_grad():
        pred = model(batch.images).argmax(dim=1)
    target_classes = pred if settings.target == "pred" else batch.labels
    maps = compute_maps(model, batch.images, target_classes, settings).cpu()
    boxes = [torch.from_numpy(b[0]) for b in boxes_from_maps(maps, [settings.threshold], mode="largest")]
    names = list(getattr(data, "class_names", []))
    titles = [
        f"{names[int(p)] if names else int(p)}{'' if int(p) == int(l) else ' ✗'}"
        for p, l in zip(pred.tolist(), batch.labels.tolist())
    ]
    target = "predicted" if settings.target == "pred" else "true"
    title = (f"{settings.attribution} maps of {Path(checkpoint).parent.name or Path(checkpoint).stem} for the {target} class "
             f"on {dataset} {split} (title: prediction, ✗ = wrong)")
    fig = draw_overlay_grid(batch.images.cpu(), maps=maps, gt_boxes=batch.boxes, pred_boxes=boxes, titles=titles, masks=batch.masks,
                            title=title, pred_label=f"predicted box (threshold {settings.threshold:g})")
    return save_figure(fig, out)


__all__ = ["run_visualize"]
