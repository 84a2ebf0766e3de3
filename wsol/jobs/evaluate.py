"""The evaluation job: a COCO results file + the dataset's ground truth → one metric table.

Scores in original image pixels: Top-1 Acc, GT-Known / Top-1 Loc, Top-1 Seg, mIoU and COCOeval AP,
plus the map-level sweep metrics that `localize` stored beside the results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from torch.utils.data import DataLoader, Dataset

from wsol.data import build_dataset
from wsol.errors import DataError
from wsol.export.coco import coco_eval, decode_mask, gt_annotation, gt_to_coco, load_results, read_results_meta
from wsol.jobs.localize import CATEGORY_OFFSET
from wsol.jobs.runfolder import lock_run_folder, note, write_json
from wsol.metrics.intervals import wilson_interval
from wsol.metrics.localization import max_iou
from wsol.metrics.segmentation import mask_iou


def collect_ground_truth(data: Dataset) -> Dict[int, Dict[str, Any]]:
    """image_id → label, boxes (original pixels), optional mask and (height, width)."""
    gt: Dict[int, Dict[str, Any]] = {}
    loader = DataLoader(data, batch_size=1, shuffle=False, collate_fn=lambda items: items[0])
    for sample in loader:
        gt[int(sample.image_id)] = {
            "label": int(sample.label),
            "boxes": sample.boxes.numpy().reshape(-1, 4),
            "mask": None if sample.mask is None else sample.mask.numpy().astype(bool),
            "size": (int(sample.image.shape[1]), int(sample.image.shape[2])),
        }
    return gt


def check_categories(pred: Path, results: List[Dict[str, Any]], num_classes: int, offset: int) -> None:
    """Raise a DataError naming the entry when the results are empty or a category id is outside the dataset."""
    if not results:
        raise DataError(f"results file {pred} holds no predictions; rerun wsol localize or check the file")
    low, high = offset, offset + num_classes - 1
    for i, r in enumerate(results):
        if not low <= int(r["category_id"]) <= high:
            raise DataError(
                f"results file {pred}, entry {i}: category_id {r['category_id']} is outside the dataset's {low}..{high}; was it made for another dataset?"
            )


def evaluate_predictions(pred: Path, dataset: str, root: Path, split: Optional[str] = None, iou_threshold: float = 0.5,
                         dataset_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Score a COCO results file against the dataset's ground truth (original image pixels), read with loader
    ``dataset_options`` (default: those ``wsol localize`` recorded in the file's ``.meta.json``).

    Box metrics (Top-1 Acc, GT-Known Loc, Top-1 Loc) and, when the file has masks and the dataset
    has GT masks, Top-1 Seg and mIoU; plus COCOeval AP and the sweep metrics stored by `localize`.
    """
    pred = Path(pred)
    if not pred.is_file():
        raise DataError(f"prediction file not found: {pred}")
    meta = read_results_meta(pred)
    if meta.get("dataset") not in (None, dataset):
        raise DataError(f"{pred} was made for dataset {meta['dataset']!r}, not {dataset!r}")
    made_on = meta.get("split")
    if split is not None and made_on not in (None, split):
        raise DataError(
            f"{pred} was made on the {made_on} split, not {split}; drop --split or rerun wsol localize --split {split}"
        )
    split = split or made_on or "test"
    options = meta.get("dataset_options") or {} if dataset_options is None else dataset_options
    data = build_dataset(dataset, root, split, **options)
    if meta.get("num_images") not in (None, len(data)):
        raise DataError(
            f"{pred} was made on {meta['num_images']} {split} images, but the {split} split under {root} has {len(data)}; "
            "evaluate with the --root it was localized on"
        )
    if meta.get("root") not in (None, str(Path(root).resolve())):  # a copy or a moved tree is fine; another tree of as many images is not
        note(f"{pred} was localized on the images under {meta['root']}; scoring it against the ground truth under {root}")
    gt = collect_ground_truth(data)
    results = load_results(pred, known_image_ids=gt.keys())
    offset = int(meta.get("category_offset", CATEGORY_OFFSET))
    check_categories(pred, results, int(getattr(data, "num_classes", len(getattr(data, "class_names", [])))), offset)
    best: Dict[int, Dict[str, Any]] = {}
    for r in results:
        if r["image_id"] not in best or r["score"] > best[r["image_id"]]["score"]:
            best[r["image_id"]] = r
    correct, hits, seg_hits, ious = [], [], [], []
    has_boxes = any(len(g["boxes"]) for g in gt.values())
    has_masks = all(g["mask"] is not None for g in gt.values()) and any("segmentation" in r for r in results)
    for image_id, g in gt.items():
        r = best.get(image_id)
        ok = r is not None and int(r["category_id"]) - offset == g["label"]
        correct.append(ok)
        if has_boxes:
            box = np.zeros((0, 4)) if r is None else _xywh_to_xyxy(r["bbox"])
            hits.append(max_iou(box, g["boxes"]) >= iou_threshold)
        if has_masks:
            if r is not None and "segmentation" in r:
                iou = float(mask_iou(decode_mask(r["segmentation"])[None], g["mask"][None])[0])
            else:
                iou = 0.0
            ious.append(iou)
            seg_hits.append(ok and iou >= iou_threshold)
    n = max(len(gt), 1)
    counts = {"top1_acc": sum(correct)}
    if has_boxes:
        counts["gt_known_loc"] = sum(hits)
        counts["top1_loc"] = sum(h and c for h, c in zip(hits, correct))
    if has_masks:
        counts["top1_seg"] = sum(seg_hits)
    metrics: Dict[str, Any] = {"images": len(gt), "predicted": len(best), **{k: 100.0 * c / n for k, c in counts.items()}}
    if has_masks:
        metrics["miou"] = 100.0 * float(np.mean(ious)) if ious else 0.0
    if gt:
        metrics["interval"] = "two-sided 95% Wilson score interval over the images, in percent"
        metrics["intervals"] = {k: [100.0 * b for b in wilson_interval(int(c), len(gt))] for k, c in counts.items()}
    coco_gt = _coco_ground_truth(gt, getattr(data, "class_names", []), offset, with_masks=has_masks)
    if has_boxes:
        box_ap = coco_eval(coco_gt, results, iou_type="bbox")
        metrics["coco_bbox_ap"], metrics["coco_bbox_ap50"] = 100.0 * box_ap["AP"], 100.0 * box_ap["AP50"]
    if has_masks:
        segm_ap = coco_eval(coco_gt, results, iou_type="segm")
        metrics["coco_segm_ap"], metrics["coco_segm_ap50"] = 100.0 * segm_ap["AP"], 100.0 * segm_ap["AP50"]
    for key, value in (meta.get("map_metrics") or {}).items():
        metrics.setdefault(key, value)
    metrics["threshold"] = meta.get("threshold")
    metrics["attribution"] = meta.get("attribution")
    metrics["units"] = {k: metric_unit(k) for k in metrics if k not in ("interval", "intervals", "attribution")}  # as summary.json's
    return metrics


def metric_unit(name: str) -> str:
    """The unit of entry ``name`` of :func:`evaluate_predictions`'s record, for a printed table: image counts,
    thresholds as a fraction of each map's maximum, "" for names, and percent for every score."""
    if name in ("images", "predicted"):
        return "images"
    if name.endswith("threshold"):
        return "fraction of map max"
    return "" if name == "attribution" else "%"


def _xywh_to_xyxy(bbox: List[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return np.zeros((0, 4))
    return np.array([[x, y, x + w, y + h]])


def _coco_ground_truth(gt: Dict[int, Dict[str, Any]], class_names: List[str], offset: int, with_masks: bool) -> Dict[str, Any]:
    images = [{"id": i, "height": g["size"][0], "width": g["size"][1], "file_name": str(i)} for i, g in gt.items()]
    categories = [{"id": k + offset, "name": name} for k, name in enumerate(class_names)]
    annotations = []
    for image_id, g in gt.items():
        for box in g["boxes"]:
            mask = g["mask"] if with_masks else None
            annotations.append(gt_annotation(len(annotations) + 1, image_id, g["label"] + offset, box.tolist(), mask))
    return gt_to_coco(images, categories, annotations)


def metrics_path(pred: Path) -> Path:
    """Where the scores of prediction file ``pred`` go: ``<pred stem>.metrics.json`` beside it."""
    return Path(pred).with_suffix(".metrics.json")


def save_metrics(pred: Path, metrics: Dict[str, Any]) -> Path:
    """Write :func:`metrics_path` (atomically, holding its folder's lock)."""
    path = metrics_path(pred)
    with lock_run_folder(path.parent, transient=True):
        write_json(path, metrics)
    return path


__all__ = ["check_categories", "collect_ground_truth", "evaluate_predictions", "metric_unit", "metrics_path", "save_metrics"]
