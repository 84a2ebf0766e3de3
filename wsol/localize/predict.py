"""The localization job: model + dataset → attribution maps → boxes/masks → per-image predictions.

One pass over the dataset computes, per image, the predicted class and its probability, the box
(largest region) at every threshold of the sweep, and feeds streaming map-level evaluators
(MaxBoxAccV2, PxAP). Under ``torchrun`` each rank takes a shard of the images and rank 0 merges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from wsol.attribution import attribute
from wsol.data.sample import Batch, boxes_to_original, collate
from wsol.errors import ConfigError
from wsol.localize.boxes import default_thresholds, map_boxes_batch, to_uint8
from wsol.localize.heatmap import PRESETS, PostProcess
from wsol.utils import distributed as dist
from wsol.utils.progress import progress

TARGETS = ("pred", "gt")


@dataclass(frozen=True)
class LocalizeSettings:
    """How maps are made and turned into boxes.

    target: the class whose map is drawn — 'pred' (the official ART code; what a deployed model
    can do) or 'gt' (the GT-known protocol of wsolevaluation). steps: a post-processing preset
    name or a tuple of step names (see wsol.localize.heatmap). threshold: fraction of each map's
    maximum used for the exported boxes and masks unless ``sweep`` picks the best one.
    """

    attribution: str = "grad"
    target: str = "pred"
    steps: Any = "wsol"
    threshold: float = 0.2
    sweep: bool = False
    interval: float = 0.01
    masks: bool = False
    batch_size: int = 32
    workers: int = 0
    attribution_options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"--threshold is a fraction of the map maximum in [0, 1), got {self.threshold}")
        if not 0.0 < self.interval < 1.0:
            raise ConfigError(f"--interval must be in (0, 1), got {self.interval}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if isinstance(self.steps, str) and self.steps not in PRESETS:
            raise ConfigError(f"unknown post-processing preset {self.steps!r}; choose one of {', '.join(sorted(PRESETS))}")

    def thresholds(self) -> np.ndarray:
        """The sweep (``np.arange(0, 1, interval)``) with the fixed threshold always included."""
        grid = default_thresholds(self.interval)
        return np.unique(np.append(grid, self.threshold))


@dataclass
class ImagePrediction:
    """What the job decided for one image (boxes in original-image pixels, x2/y2 exclusive)."""

    image_id: int
    label: int
    pred: int
    score: float
    boxes: np.ndarray  # T×4 largest-region box per threshold; NaN rows where nothing is on
    orig_size: Tuple[int, int]
    to_orig: Tuple[float, float, float, float]
    map_u8: Optional[np.ndarray] = None  # kept only when masks are requested


def compute_maps(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, settings: LocalizeSettings) -> torch.Tensor:
    """Attribution maps post-processed to N×H×W in [0, 1] at the input resolution."""
    raw = attribute(model, images, target, settings.attribution, **settings.attribution_options)
    steps = settings.steps if isinstance(settings.steps, str) else tuple(settings.steps)
    maps = PostProcess(steps)(raw.detach())
    return maps.clamp(0, 1)


def _shard(dataset: Dataset) -> Dataset:
    """This rank's contiguous-stride shard of ``dataset`` (the whole set in one process)."""
    if dist.world_size() == 1:
        return dataset
    return Subset(dataset, list(range(dist.rank(), len(dataset), dist.world_size())))  # type: ignore[arg-type]


def _largest_boxes(map_boxes: Sequence[Any], n_thresholds: int) -> np.ndarray:
    """N×T×4 largest-region box per threshold (NaN where nothing is on), without a threshold loop."""
    out = np.full((len(map_boxes), n_thresholds, 4), np.nan, dtype=np.float32)
    for i, mb in enumerate(map_boxes):
        per_level = np.full((len(mb.levels) + 1, 4), np.nan, dtype=np.float32)  # last row: no foreground (-1)
        per_level[mb.box_level] = mb.boxes
        out[i] = per_level[mb.level_of_threshold]
    return out


def localize_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    settings: LocalizeSettings,
    device: torch.device,
    evaluators: Sequence[Any] = (),
    show_progress: bool = True,
) -> List[ImagePrediction]:
    """Run the job over this rank's shard; ``evaluators`` get ``accumulate(batch, maps, preds)``.

    Returns this rank's predictions; :func:`gather_predictions` merges them on every rank.
    """
    model.eval()
    thresholds = settings.thresholds()
    loader = DataLoader(_shard(dataset), batch_size=settings.batch_size, shuffle=False, num_workers=settings.workers, collate_fn=collate)
    results: List[ImagePrediction] = []
    for batch in progress(loader, desc=f"localize {settings.attribution}", enabled=show_progress):
        batch = batch.to(device)
        with torch.no_grad():
            probs = model(batch.images).softmax(dim=1)
        score, pred = probs.max(dim=1)
        target = pred if settings.target == "pred" else batch.labels
        maps = compute_maps(model, batch.images, target, settings).cpu()
        u8 = to_uint8(maps)
        boxes = _largest_boxes(map_boxes_batch(u8, thresholds, "largest"), len(thresholds))
        for evaluator in evaluators:
            evaluator.accumulate(batch, maps, pred.cpu())
        for i in range(len(batch.labels)):
            orig = boxes_to_original(torch.from_numpy(boxes[i]), batch.to_orig[i].tolist()).numpy()
            results.append(
                ImagePrediction(
                    image_id=int(batch.image_ids[i]),
                    label=int(batch.labels[i]),
                    pred=int(pred[i]),
                    score=float(score[i]),
                    boxes=orig,
                    orig_size=tuple(batch.orig_sizes[i]),  # type: ignore[arg-type]
                    to_orig=tuple(batch.to_orig[i].tolist()),  # type: ignore[arg-type]
                    map_u8=u8[i].copy() if settings.masks else None,
                )
            )
    return results


def gather_predictions(local: List[ImagePrediction]) -> List[ImagePrediction]:
    """All ranks' predictions, sorted by image id (identity in one process)."""
    merged = [p for part in dist.gather_objects(local) for p in part]
    return sorted(merged, key=lambda p: p.image_id)


def mask_in_original(map_u8: np.ndarray, threshold: float, orig_size: Tuple[int, int], to_orig: Sequence[float]) -> np.ndarray:
    """The thresholded map (pixels > int(t·max), as for boxes) warped back to the original image."""
    import cv2

    level = int(threshold * int(map_u8.max()))
    on = (map_u8 > level).astype(np.uint8)
    if int(map_u8.max()) == 0:
        on[:] = 0
    sx, sy, tx, ty = (float(v) for v in to_orig)
    h, w = orig_size
    # to_orig maps pixel edges; cv2 maps pixel centres (integer coordinates), hence the half-pixel terms.
    matrix = np.array([[sx, 0.0, tx + 0.5 * sx - 0.5], [0.0, sy, ty + 0.5 * sy - 0.5]], dtype=np.float64)
    return cv2.warpAffine(on, matrix, (int(w), int(h)), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)


class MapMetrics:
    """Streaming map-level metrics at the model's input resolution (as wsolevaluation evaluates).

    MaxBoxAccV2 (all regions, δ = 30/50/70), the largest-region GT-Known / Top-1 Loc curves over
    the threshold sweep, and — when the dataset has masks — Top-1 Seg / mIoU curves and PxAP.
    """

    def __init__(self, thresholds: np.ndarray, with_masks: bool) -> None:
        from wsol.metrics.localization import BoxEvaluator
        from wsol.metrics.segmentation import PxAPEvaluator, SegmentationEvaluator

        self.v2 = BoxEvaluator(thresholds, (30, 50, 70), mode="all")
        self.largest = BoxEvaluator(thresholds, (50,), mode="largest")
        self.seg = SegmentationEvaluator(thresholds) if with_masks else None
        self.pxap = PxAPEvaluator(thresholds) if with_masks else None

    def accumulate(self, batch: Batch, maps: torch.Tensor, pred: torch.Tensor) -> None:
        correct = (pred == batch.labels.cpu()).numpy()
        gt = [b.cpu().numpy() for b in batch.boxes]
        if any(len(g) for g in gt):
            self.v2.accumulate(maps, gt, correct)
            self.largest.accumulate(maps, gt, correct)
        if self.seg is not None and self.pxap is not None and batch.masks is not None:
            self.seg.accumulate(maps, batch.masks.cpu().numpy(), correct)
            self.pxap.accumulate(maps, batch.masks.cpu().numpy())

    def merge_ranks(self) -> None:
        """Sum every rank's counters into this object (identity in one process)."""
        if dist.world_size() == 1:
            return
        parts = dist.gather_objects(self._local_states())
        mine = dist.rank()
        for i, states in enumerate(parts):
            if i == mine:
                continue
            for name, state in states.items():
                getattr(self, name).merge(state)

    def _local_states(self) -> Dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in ("v2", "largest", "seg", "pxap") if getattr(self, name) is not None}

    def summary(self) -> Dict[str, Any]:
        """Flat numbers for the meta file and the report (percent)."""
        out: Dict[str, Any] = {}
        if self.v2.count:
            v2 = self.v2.compute().to_dict()
            out["maxboxacc_v2"] = v2["max_box_acc"]
            for delta in (30, 50, 70):
                out[f"maxboxacc_v2@{delta}"] = v2[f"max_box_acc@{delta}"]
            largest = self.largest.compute().to_dict()
            out["best_gt_known_loc"] = largest["gt_known_loc"]
            out["best_gt_known_threshold"] = largest["best_threshold@50"]
            out["best_top1_loc"] = largest.get("top1_loc")
            out["best_top1_loc_threshold"] = largest.get("top1_loc_threshold@50")
        if self.seg is not None and self.seg.count and self.pxap is not None:
            seg = self.seg.compute().to_dict()
            out["best_top1_seg"] = seg.get("top1_seg")
            out["best_top1_seg_threshold"] = seg.get("top1_seg_threshold")
            out["best_miou"] = seg["miou"]
            out["pxap"] = self.pxap.compute().pxap
        return out

    def curves_at(self, threshold: float) -> Dict[str, Any]:
        """Fixed-threshold numbers at the model's input resolution."""
        out: Dict[str, Any] = {}
        if self.largest.count:
            at = self.largest.compute().at_threshold(threshold)
            out["gt_known_loc"] = at["gt_known_loc@50"]
            out["top1_loc"] = at.get("top1_loc@50")
        if self.seg is not None and self.seg.count:
            at = self.seg.compute().at_threshold(threshold)
            out["top1_seg"] = at.get("top1_seg")
            out["miou"] = at["miou"]
        return out
