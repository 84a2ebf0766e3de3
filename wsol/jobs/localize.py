"""The localization job: checkpoint + dataset → attribution maps → boxes/masks → COCO results.

One pass over the dataset computes, per image, the predicted class and its probability and the
largest-region box at the export threshold — or, with ``sweep``, at every threshold of the grid,
since the best one is known only after the pass — and feeds streaming map-level evaluators
(MaxBoxAccV2, PxAP). Under ``torchrun`` each rank takes a shard of the images and rank 0 writes.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsol.attribution import ATTRIBUTIONS, attribute, method_options
from wsol.config import LocalizeConfig
from wsol.data import build_dataset
from wsol.data.base import require_images
from wsol.data.sample import Batch, boxes_to_original, collate
from wsol.data.transforms import build_transform
from wsol.errors import WsolError
from wsol.export.coco import results_to_coco, write_results
from wsol.jobs.runfolder import gather, lock_run_folder, shard
from wsol.jobs.train import transform_from_spec
from wsol.localize.boxes import map_boxes_batch
from wsol.localize.fastboxes import kernels_cached
from wsol.localize.levels import threshold_levels, to_uint8
from wsol.localize.heatmap import PostProcess
from wsol.models import Classifier, load_model
from wsol.models.build import checkpoint_meta
from wsol.utils import distributed as dist
from wsol.utils.device import select_device
from wsol.utils.progress import progress

CATEGORY_OFFSET = 1  # COCO category ids are class index + 1 (COCO reserves 0).


@dataclass
class ImagePrediction:
    """What the job decided for one image (boxes in original-image pixels, x2/y2 exclusive)."""

    image_id: int
    label: int
    pred: int
    score: float
    boxes: np.ndarray  # T×4 largest-region box per box threshold; NaN rows where nothing is on
    orig_size: Tuple[int, int]
    to_orig: Tuple[float, float, float, float]
    map_u8: Optional[np.ndarray] = None  # kept only when masks are requested


def eval_dataset(name: str, root: Path, split: str, size: int, **options: Any) -> Dataset:
    """The dataset with the evaluation transform: resize to the model's input size (boxes follow)."""
    return build_dataset(name, root, split, transform=build_transform("cub", train=False, size=size), **options)


def checkpoint_dataset(checkpoint: Path, model: Classifier, name: str, root: Path, split: str, **options: Any) -> Dataset:
    """The dataset as the checkpoint's training run evaluated it: the recorded evaluation transform
    (checkpoints without one: resize to the model's input size), checked to have the model's classes."""
    spec = checkpoint_meta(checkpoint).get("eval_transform")
    if spec is None:
        data = eval_dataset(name, root, split, model.input_size, **options)
    else:
        data = build_dataset(name, root, split, transform=transform_from_spec(spec, train=False), **options)
    require_images(data, name, split)
    if data.num_classes != model.num_classes:
        raise WsolError(f"checkpoint {checkpoint} has {model.num_classes} classes but dataset {name} has {data.num_classes}; use a checkpoint trained on it")
    return data


def check_settings(settings: LocalizeConfig) -> None:
    """Raise a one-line WsolError for an unknown attribution, attribution option or post-processing
    preset, before any image is read."""
    ATTRIBUTIONS.get(settings.attribution)
    unknown = sorted(set(settings.attribution_options) - set(method_options(settings.attribution)) - {"reduce"})
    if unknown:
        raise WsolError(f"attribution {settings.attribution!r} has no option {unknown[0]!r}; it takes: {', '.join(method_options(settings.attribution))}")
    PostProcess(settings.postprocess if isinstance(settings.postprocess, str) else tuple(settings.postprocess))


def compute_maps(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, settings: LocalizeConfig) -> torch.Tensor:
    """Attribution maps post-processed to N×H×W in [0, 1] at the input resolution."""
    raw = attribute(model, images, target, settings.attribution, **settings.attribution_options)
    steps = settings.postprocess if isinstance(settings.postprocess, str) else tuple(settings.postprocess)
    return PostProcess(steps)(raw.detach()).clamp(0, 1)


def box_thresholds(settings: LocalizeConfig) -> np.ndarray:
    """The thresholds boxes are cut at during the pass: the export threshold alone, or the whole
    metric grid when ``sweep`` picks it afterwards."""
    return settings.metric_thresholds() if settings.sweep else np.array([settings.threshold])


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
    settings: LocalizeConfig,
    device: torch.device,
    evaluators: Sequence[Any] = (),
    show_progress: bool = True,
) -> List[ImagePrediction]:
    """Run the pass over this rank's shard; ``evaluators`` get ``accumulate(batch, maps, preds)``.

    Returns this rank's predictions, boxes at :func:`box_thresholds`; :func:`gather_predictions`
    merges them on every rank.
    """
    model.eval()
    thresholds = box_thresholds(settings)
    loader = DataLoader(shard(dataset), batch_size=settings.batch_size, shuffle=False, num_workers=settings.workers, collate_fn=collate)
    results: List[ImagePrediction] = []
    cold = show_progress and dist.is_main_process() and not kernels_cached()
    for batch in progress(loader, desc=f"localize {settings.attribution}", enabled=show_progress):
        if cold:  # said once the first batch has loaded, so a bad input's error stays the only line
            print("note: compiling the box-extraction kernels (first run only, about a minute on a CPU)", file=sys.stderr, flush=True)
            cold = False
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
    return sorted(gather(local), key=lambda p: p.image_id)


def mask_in_original(map_u8: np.ndarray, threshold: float, orig_size: Tuple[int, int], to_orig: Sequence[float]) -> np.ndarray:
    """The thresholded map (foreground ``u8 > level``, the boxes' cut level) warped back to the original image."""
    import cv2

    level = int(threshold_levels([int(map_u8.max())], [threshold])[0, 0])
    on = (map_u8 > level).astype(np.uint8)
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


def run_localize(
    checkpoint: Path,
    dataset: str,
    root: Path,
    out: Path,
    settings: LocalizeConfig,
    split: str = "test",
    device: Optional[str] = None,
    show_progress: bool = True,
    dataset_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Localize every image of ``split`` and write COCO results ``out`` plus ``<out>.meta.json``.

    Under torchrun each rank handles a shard; rank 0 merges and writes. The settings, checkpoint and
    dataset are checked before the pass; the output folder is locked while the job runs. Returns
    the meta record.
    """
    dist.init_from_env()
    check_settings(settings)
    dev = select_device(device)
    model = load_model(checkpoint).to(dev)
    ck_meta = checkpoint_meta(checkpoint)
    data = checkpoint_dataset(checkpoint, model, dataset, root, split, **(dataset_options or {}))
    with lock_run_folder(Path(out).parent, transient=True):
        return _localize_into(out, model, ck_meta, data, checkpoint, dataset, split, settings, dev, show_progress)


def _localize_into(
    out: Path, model: Classifier, ck_meta: Dict[str, Any], data: Dataset, checkpoint: Path, dataset: str, split: str,
    settings: LocalizeConfig, dev: torch.device, show_progress: bool,
) -> Dict[str, Any]:
    dist.mark_work_started()
    metrics = MapMetrics(settings.metric_thresholds(), with_masks=bool(getattr(data, "has_masks", False)))
    predictions = gather_predictions(localize_dataset(model, data, settings, dev, evaluators=[metrics], show_progress=show_progress))
    metrics.merge_ranks()
    summary = metrics.summary()
    threshold, j = _export_threshold(settings, summary, dataset)
    meta = {
        "attribution": settings.attribution,
        "threshold": threshold,
        "sweep": settings.sweep,
        "checkpoint": str(checkpoint),
        "train_method": ck_meta.get("method"),
        "arch": ck_meta.get("arch"),
        "dataset": dataset,
        "split": split,
        "num_images": len(predictions),
        "category_offset": CATEGORY_OFFSET,
        "class_names": list(getattr(data, "class_names", [])),
        "settings": {k: v for k, v in asdict(settings).items() if k != "attribution_options"},
        "attribution_options": settings.attribution_options,
        "map_metrics": summary,
        "input_resolution_metrics": metrics.curves_at(threshold),
    }
    if dist.is_main_process():
        write_results(out, _coco_results(predictions, j, threshold, settings.masks), meta)
    dist.barrier()
    return meta


def _export_threshold(settings: LocalizeConfig, summary: Dict[str, Any], dataset: str) -> Tuple[float, int]:
    """The threshold the exported boxes and masks use, and its row in the predictions' boxes."""
    if not settings.sweep:
        return float(settings.threshold), 0
    if "best_gt_known_threshold" not in summary:
        raise WsolError(f"--sweep needs ground-truth boxes, and dataset {dataset} has none; give --threshold instead")
    threshold = float(summary["best_gt_known_threshold"])
    return threshold, int(np.flatnonzero(box_thresholds(settings) == threshold)[0])


def _coco_results(predictions: List[ImagePrediction], j: int, threshold: float, masks: bool) -> List[Dict[str, Any]]:
    boxes = np.stack([np.nan_to_num(p.boxes[j], nan=0.0) for p in predictions]) if predictions else np.zeros((0, 4))
    mask_list = [mask_in_original(p.map_u8, threshold, p.orig_size, p.to_orig) for p in predictions] if masks else None  # type: ignore[arg-type]
    return results_to_coco(
        [p.image_id for p in predictions],
        [p.pred + CATEGORY_OFFSET for p in predictions],
        boxes,
        [p.score for p in predictions],
        mask_list,
    )


__all__ = [
    "CATEGORY_OFFSET",
    "ImagePrediction",
    "MapMetrics",
    "box_thresholds",
    "check_settings",
    "checkpoint_dataset",
    "compute_maps",
    "eval_dataset",
    "gather_predictions",
    "localize_dataset",
    "mask_in_original",
    "run_localize",
]
