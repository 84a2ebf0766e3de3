"""The localization job: checkpoint + dataset → attribution maps → boxes/masks → COCO results.

One pass over the dataset computes, per image, the predicted class and its probability and the
largest-region box at the export threshold — or, with ``sweep``, at every threshold of the grid,
since the best one is known only after the pass — and feeds streaming map-level evaluators
(MaxBoxAccV2, PxAP).

The pass goes in batches of ``batch_size`` images in dataset order; each finished batch (its predictions and
its evaluator counters) is written at once to ``<out>.partial/batch-K.npz``, so a killed run rerun with the
same arguments does only the batches left, and the results are written from the batch files, in batch order,
whatever the interruptions. Under ``torchrun`` each rank takes every world-th batch left and rank 0 writes the
results, then removes the ``.partial`` folder.
"""
from __future__ import annotations

import io
import json
import math
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from wsol.attribution import ATTRIBUTIONS, attribute, method_options
from wsol.config import LocalizeConfig
from wsol.data import build_dataset
from wsol.data.base import require_images
from wsol.data.sample import Batch, boxes_to_original, collate, has_box
from wsol.data.transforms import build_transform
from wsol.errors import ConfigError, WsolError, option_flag
from wsol.export.coco import results_to_coco, write_results
from wsol.jobs.runfolder import (
    CHECKPOINT_DIGEST, check_checkpoint_dataset, class_names_note, config_differences, lock_run_folder, note, rewritten_since, start_over,
)
from wsol.jobs.train import transform_from_spec
from wsol.localize.boxes import map_boxes_batch
from wsol.localize.fastboxes import kernels_cached
from wsol.localize.levels import threshold_levels, to_uint8
from wsol.localize.heatmap import PostProcess
from wsol.models import Classifier, load_model
from wsol.models.build import checkpoint_meta
from wsol.utils import distributed as dist
from wsol.utils.device import select_device
from wsol.utils.io import atomic_write_bytes, file_sha256, remove_folder
from wsol.utils.progress import progress

CATEGORY_OFFSET = 1  # COCO category ids are class index + 1 (COCO reserves 0).
PARTIAL_SUFFIX = ".partial"
FREE_ON_RESUME = ("workers",)
"""Settings a resumed localize may change: they change no number."""


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
    names = list(getattr(data, "class_names", []))
    check_checkpoint_dataset(checkpoint, name, names)  # a shapes model on svhn (10 classes each): maps of classes it never saw
    note(class_names_note(checkpoint, name, names))
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


def localize_batches(
    model: torch.nn.Module,
    dataset: Dataset,
    batches: Sequence[int],
    settings: LocalizeConfig,
    device: torch.device,
    with_masks: bool,
    show_progress: bool = True,
    desc: str = "",
) -> Iterator[Tuple[int, List["ImagePrediction"], "MapMetrics"]]:
    """Localize batches ``batches`` (ascending) of ``dataset``, batch k being images k·B … (k+1)·B − 1 for
    B = ``settings.batch_size``; yields per batch its number, its predictions (boxes at :func:`box_thresholds`)
    and a :class:`MapMetrics` that holds this batch alone (``with_masks``: also Top-1 Seg and PxAP)."""
    model.eval()
    thresholds = box_thresholds(settings)
    size = settings.batch_size
    indices = [i for k in batches for i in range(k * size, min((k + 1) * size, len(dataset)))]  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, indices), batch_size=size, shuffle=False, num_workers=settings.workers, collate_fn=collate)
    cold = show_progress and dist.is_main_process() and not kernels_cached()
    for batch, k in zip(progress(loader, desc=desc or f"localize {settings.attribution}", enabled=show_progress), batches):
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
        metrics = MapMetrics(settings.metric_thresholds(), with_masks)
        metrics.accumulate(batch, maps, pred.cpu())
        results = []
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
        yield k, results, metrics


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
    the threshold sweep, and — when the dataset has masks — Top-1 Seg / mIoU curves and PxAP. The box
    numbers are over the images with a GT box, the mask numbers over those with a GT mask (on Flowers, the
    images with a trimap or segmentation).
    """

    def __init__(self, thresholds: np.ndarray, with_masks: bool) -> None:
        from wsol.metrics.localization import BoxEvaluator
        from wsol.metrics.segmentation import PxAPEvaluator, SegmentationEvaluator

        self.v2 = BoxEvaluator(thresholds, (30, 50, 70), mode="all")
        self.largest = BoxEvaluator(thresholds, (50,), mode="largest")
        self.seg = SegmentationEvaluator(thresholds) if with_masks else None
        self.pxap = PxAPEvaluator(thresholds) if with_masks else None

    def accumulate(self, batch: Batch, maps: torch.Tensor, pred: torch.Tensor) -> None:
        """Add a batch: the box evaluators see its images with a GT box, the mask ones its images with a GT mask
        (:func:`wsol.data.sample.has_box`, :func:`~wsol.data.sample.has_mask`); the others are in no denominator."""
        correct = (pred == batch.labels.cpu()).numpy()
        boxed = np.array([has_box(b) for b in batch.boxes], dtype=bool)
        if boxed.any():
            gt = [b.cpu().numpy() for b, keep in zip(batch.boxes, boxed) if keep]
            self.v2.accumulate(_rows(maps, boxed), gt, correct[boxed])
            self.largest.accumulate(_rows(maps, boxed), gt, correct[boxed])
        if self.seg is not None and self.pxap is not None and batch.masks is not None:
            masked = np.ones(len(correct), bool) if batch.masked is None else batch.masked.cpu().numpy()
            masks = batch.masks.cpu().numpy()[masked]
            self.seg.accumulate(_rows(maps, masked), masks, correct[masked])
            self.pxap.accumulate(_rows(maps, masked), masks)

    def states(self) -> Dict[str, Any]:
        """Every evaluator's counters (JSON-friendly), for :meth:`merge`."""
        return {name: getattr(self, name).state_dict() for name in ("v2", "largest", "seg", "pxap") if getattr(self, name) is not None}

    def merge(self, states: Dict[str, Any]) -> None:
        """Add counters written by :meth:`states` (another batch's or rank's) into this object."""
        for name, state in states.items():
            getattr(self, name).merge(state)

    def summary(self) -> Dict[str, Any]:
        """Flat numbers for the meta file and the report: percent, and the counts of images the box and the mask numbers
        are over (``images_with_box``, ``images_with_mask``)."""
        out: Dict[str, Any] = {}
        if self.v2.count:
            out["images_with_box"] = self.v2.count
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
            out["images_with_mask"] = self.seg.count
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


def _rows(maps: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """The maps of the images ``keep`` marks (all of them as they are, the fully annotated case)."""
    return maps if keep.all() else maps[torch.from_numpy(keep)]


_NO_BOXES = "--sweep needs ground-truth boxes, and split {split!r} of dataset {dataset} has none; give --threshold instead"


def partial_folder(out: Path) -> Path:
    """Where a localize run into ``out`` keeps its finished batches until it writes the results (``preds.json.partial``)."""
    return Path(out).with_name(Path(out).name + PARTIAL_SUFFIX)


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
    after_batch: Optional[Callable[[int], None]] = None,
) -> Dict[str, Any]:
    """Localize every image of ``split`` and write COCO results ``out`` plus ``<out>.meta.json``.

    Finished batches go to :func:`partial_folder` as they are done, and a rerun with the same arguments resumes
    from them (other arguments while they are there are refused; batches of a checkpoint rewritten since are
    dropped). Under torchrun the ranks share the batches; rank 0 writes. The settings, checkpoint and dataset are
    checked before the pass; the output folder is locked while the job runs. ``after_batch(k)`` is called once
    batch k is on disk (a hook for tests). Returns the meta record.
    """
    dist.init_from_env()
    check_settings(settings)
    dev = select_device(device)
    model = load_model(checkpoint).to(dev)
    ck_meta = checkpoint_meta(checkpoint)
    data = checkpoint_dataset(checkpoint, model, dataset, root, split, **(dataset_options or {}))
    if settings.sweep and not getattr(data, "has_boxes", True):
        raise WsolError(_NO_BOXES.format(dataset=dataset, split=split))
    key = _run_key(checkpoint, dataset, root, split, settings, dataset_options, len(data))  # type: ignore[arg-type]
    with lock_run_folder(Path(out).parent, transient=True):
        done = _finished_batches(Path(out), key)
        return _localize_into(out, model, ck_meta, data, checkpoint, dataset, split, settings, dev, show_progress, key, done, after_batch)


def _run_key(checkpoint: Path, dataset: str, root: Path, split: str, settings: LocalizeConfig, dataset_options: Optional[Dict[str, Any]],
             n_images: int) -> Dict[str, Any]:
    """Everything a finished batch depends on, as JSON: a rerun resumes an earlier run's batches only when this is the same."""
    key = {
        "checkpoint": str(Path(checkpoint).resolve()),
        CHECKPOINT_DIGEST: file_sha256(checkpoint),
        "dataset": dataset,
        "root": str(Path(root).resolve()),
        "split": split,
        "dataset_options": dataset_options or {},
        "images": n_images,
        "settings": {k: v for k, v in asdict(settings).items() if k not in FREE_ON_RESUME},
    }
    return json.loads(json.dumps(key, default=str))


def _option_name(key: str) -> str:
    """A run-key difference as the user knows it: ``settings.batch_size`` → ``--batch-size``."""
    name = key.split(".", 1)[1] if key.startswith("settings.") else key
    if name == "images":
        return "number of images (the dataset changed)"
    return option_flag(name) if "." not in name and name != "dataset_options" else name


def _finished_batches(out: Path, key: Dict[str, Any]) -> List[int]:
    """The batches an earlier run into ``out`` with the same ``key`` finished (on rank 0's reading; read-only elsewhere).

    Batches of other arguments are refused in one line (rerun that command, or delete the folder to start over);
    batches of an earlier version of the same checkpoint file (retrained since) are stale and rank 0 removes them.
    """
    partial = partial_folder(out)
    files = sorted(partial.glob("batch-*.npz"))
    done: List[int] = []
    if files:
        try:
            with np.load(files[0]) as f:
                old = json.loads(str(f["run"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise WsolError(f"{files[0]} is unreadable ({exc}); delete {partial} to start over") from None
        diffs = [d for d in config_differences(old, key) if d != CHECKPOINT_DIGEST]
        rewritten = rewritten_since(old, key) and "checkpoint" not in diffs  # worthless whatever else differs
        if diffs and not rewritten:
            shown = ", ".join(dict.fromkeys(_option_name(d) for d in diffs))
            raise ConfigError(f"{partial} holds the finished batches of a localize run into {out} with another {shown}; "
                              f"rerun that command to finish it, or delete {partial} to start this one")
        if not rewritten:
            done = [int(p.stem.split("-")[1]) for p in files]
    dist.barrier()  # every rank has read the folder before rank 0 may remove it
    if files and not done:
        start_over(partial, "batches", key["checkpoint"], [partial])
    return dist.gather_objects(done)[0]  # a collective: no rank writes a batch before the stale ones are gone


def _write_batch(path: Path, key: Dict[str, Any], predictions: Sequence[ImagePrediction], metrics: "MapMetrics") -> None:
    """One finished batch (the run key, its evaluator counters and predictions) as an ``.npz``, written atomically."""
    arrays = {
        "run": np.array(json.dumps(key)),
        "states": np.array(json.dumps(metrics.states())),
        "image_id": np.array([p.image_id for p in predictions], np.int64),
        "label": np.array([p.label for p in predictions], np.int64),
        "pred": np.array([p.pred for p in predictions], np.int64),
        "score": np.array([p.score for p in predictions], np.float64),
        "boxes": np.stack([p.boxes for p in predictions]),
        "orig_size": np.array([p.orig_size for p in predictions], np.int64),
        "to_orig": np.array([p.to_orig for p in predictions], np.float64),
    }
    if predictions[0].map_u8 is not None:
        arrays["map_u8"] = np.stack([p.map_u8 for p in predictions])  # type: ignore[misc]
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def _read_batch(path: Path, with_predictions: bool) -> Tuple[Dict[str, Any], List[ImagePrediction]]:
    """A batch file's evaluator counters and, ``with_predictions`` (rank 0, which writes the results), its
    predictions, from one opening of the file."""
    with np.load(path) as f:
        states = json.loads(str(f["states"]))
        a = {name: f[name] for name in f.files if name not in ("run", "states")} if with_predictions else {}
    if not a:
        return states, []
    maps = a.get("map_u8")
    return states, [
        ImagePrediction(
            image_id=int(a["image_id"][i]), label=int(a["label"][i]), pred=int(a["pred"][i]), score=float(a["score"][i]), boxes=a["boxes"][i],
            orig_size=(int(a["orig_size"][i, 0]), int(a["orig_size"][i, 1])), to_orig=tuple(float(v) for v in a["to_orig"][i]),  # type: ignore[arg-type]
            map_u8=None if maps is None else maps[i],
        )
        for i in range(len(a["image_id"]))
    ]


def _localize_into(
    out: Path, model: Classifier, ck_meta: Dict[str, Any], data: Dataset, checkpoint: Path, dataset: str, split: str,
    settings: LocalizeConfig, dev: torch.device, show_progress: bool, key: Dict[str, Any], done: List[int],
    after_batch: Optional[Callable[[int], None]],
) -> Dict[str, Any]:
    dist.mark_work_started()
    partial = partial_folder(out)
    n_batches = math.ceil(len(data) / settings.batch_size)  # type: ignore[arg-type]
    remaining = sorted(set(range(n_batches)) - set(done))
    with_masks = bool(getattr(data, "has_some_masks", getattr(data, "has_masks", False)))
    desc = f"localize {settings.attribution}" + (f" ({len(done)} of {n_batches} batches done before)" if done else "")
    batches = localize_batches(model, data, remaining[dist.rank()::dist.world_size()], settings, dev, with_masks, show_progress, desc)
    for k, predictions, batch_metrics in batches:
        _write_batch(partial / f"batch-{k:06d}.npz", key, predictions, batch_metrics)
        if after_batch is not None:
            after_batch(k)
    dist.barrier()
    files = [partial / f"batch-{k:06d}.npz" for k in range(n_batches)]
    metrics = MapMetrics(settings.metric_thresholds(), with_masks)
    predictions: List[ImagePrediction] = []
    for path in files:  # in batch order: the same sums whatever the ranks and interruptions
        states, batch_predictions = _read_batch(path, dist.is_main_process())
        metrics.merge(states)
        predictions += batch_predictions
    dist.barrier()  # every rank has read every batch file before rank 0 may remove them (below, or on an error)
    summary = metrics.summary()
    try:
        threshold, j = _export_threshold(settings, summary, dataset, split)
    except WsolError:
        if dist.is_main_process():
            remove_folder(partial)  # batches of arguments that cannot finish would only block the corrected command
        raise
    meta = {
        "attribution": settings.attribution,
        "threshold": threshold,
        "sweep": settings.sweep,
        "checkpoint": str(Path(checkpoint).resolve()),  # as the attack runs record it: a relative path meant nothing from elsewhere
        "train_method": ck_meta.get("method"),
        "arch": ck_meta.get("arch"),
        "dataset": dataset,
        "split": split,
        "root": key["root"],
        "dataset_options": key["dataset_options"],
        "num_images": len(data),  # type: ignore[arg-type]
        "category_offset": CATEGORY_OFFSET,
        "class_names": list(getattr(data, "class_names", [])),
        "settings": {k: v for k, v in asdict(settings).items() if k != "attribution_options"},
        "attribution_options": settings.attribution_options,
        "map_metrics": summary,
        "input_resolution_metrics": metrics.curves_at(threshold),
    }
    if dist.is_main_process():
        predictions.sort(key=lambda p: p.image_id)
        write_results(out, _coco_results(predictions, j, threshold, settings.masks), meta)
        remove_folder(partial)
    dist.barrier()
    return meta


def _export_threshold(settings: LocalizeConfig, summary: Dict[str, Any], dataset: str, split: str) -> Tuple[float, int]:
    """The threshold the exported boxes and masks use, and its row in the predictions' boxes."""
    if not settings.sweep:
        return float(settings.threshold), 0
    if "best_gt_known_threshold" not in summary:
        raise WsolError(_NO_BOXES.format(dataset=dataset, split=split))
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
    "localize_batches",
    "mask_in_original",
    "partial_folder",
    "run_localize",
]
