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
from wsol.data.sample import has_box, has_mask
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

    Top-1 Acc over every image; box metrics (GT-Known Loc, Top-1 Loc, COCO box AP) over the images with a GT box and,
    when the file has masks, mask metrics (Top-1 Seg, mIoU, COCO mask AP) over the images with a GT mask
    (:func:`wsol.data.sample.has_box`, :func:`~wsol.data.sample.has_mask`): on a partially annotated set (Flowers) the
    others are no misses. Plus the sweep metrics stored by `localize`. ``images_with_box`` / ``images_with_mask`` count
    those images, ``over`` gives each score's count, and each Wilson interval is over that count.
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
    box_ids = [i for i, g in gt.items() if has_box(g["boxes"])]
    mask_ids = [i for i, g in gt.items() if has_mask(g["mask"])] if any("segmentation" in r for r in results) else []
    has_boxes, has_masks = bool(box_ids), bool(mask_ids)
    correct: Dict[int, bool] = {}
    for image_id, g in gt.items():
        r = best.get(image_id)
        correct[image_id] = r is not None and int(r["category_id"]) - offset == g["label"]
    hits = {i: max_iou(_box_of(best.get(i)), gt[i]["boxes"]) >= iou_threshold for i in box_ids}
    ious = {i: _mask_iou_of(best.get(i), gt[i]["mask"]) for i in mask_ids}
    counts = {"top1_acc": (sum(correct.values()), len(gt))}  # successes, and the images they are out of
    if has_boxes:
        counts["gt_known_loc"] = (sum(hits.values()), len(box_ids))
        counts["top1_loc"] = (sum(hit and correct[i] for i, hit in hits.items()), len(box_ids))
    if has_masks:
        counts["top1_seg"] = (sum(correct[i] and iou >= iou_threshold for i, iou in ious.items()), len(mask_ids))
    metrics: Dict[str, Any] = {"images": len(gt), "predicted": len(best)}
    if has_boxes:
        metrics["images_with_box"] = len(box_ids)
    if has_masks:
        metrics["images_with_mask"] = len(mask_ids)
    metrics.update({k: 100.0 * c / max(n, 1) for k, (c, n) in counts.items()})
    if has_masks:
        metrics["miou"] = 100.0 * float(np.mean(list(ious.values())))
    if gt:
        metrics["interval"] = "two-sided 95% Wilson score interval over the images each score is over (see over), in percent"
        metrics["intervals"] = {k: [100.0 * b for b in wilson_interval(int(c), n)] for k, (c, n) in counts.items()}
    names = list(getattr(data, "class_names", []))
    if has_boxes:
        coco_box = _coco_ground_truth({i: gt[i] for i in box_ids}, names, offset, with_masks=has_masks)
        box_ap = coco_eval(coco_box, _results_of(results, box_ids), iou_type="bbox")
        metrics["coco_bbox_ap"], metrics["coco_bbox_ap50"] = 100.0 * box_ap["AP"], 100.0 * box_ap["AP50"]
    if has_masks:
        same = has_boxes and mask_ids == box_ids  # Flowers' boxes are its masks' extents; a set with both everywhere
        coco_mask = coco_box if same else _coco_ground_truth({i: gt[i] for i in mask_ids}, names, offset, with_masks=True)
        segm_ap = coco_eval(coco_mask, _results_of(results, mask_ids), iou_type="segm")
        metrics["coco_segm_ap"], metrics["coco_segm_ap50"] = 100.0 * segm_ap["AP"], 100.0 * segm_ap["AP50"]
    for key, value in (meta.get("map_metrics") or {}).items():
        metrics.setdefault(key, value)
    metrics["threshold"] = meta.get("threshold")
    metrics["attribution"] = meta.get("attribution")
    metrics["units"] = {k: metric_unit(k) for k in metrics if k not in ("interval", "intervals", "attribution")}  # as summary.json's
    sizes = {"all": len(gt), "box": metrics.get("images_with_box"), "mask": metrics.get("images_with_mask")}
    metrics["over"] = {k: sizes[p] for k in metrics if (p := metric_population(k)) is not None and sizes[p] is not None}
    return metrics


def metric_population(name: str) -> Optional[str]:
    """Which images score ``name`` of :func:`evaluate_predictions`'s record is over: ``"all"`` (Top-1 Acc), ``"box"``
    (the images with a GT box: GT-Known / Top-1 Loc, MaxBoxAccV2, COCO box AP) or ``"mask"`` (those with a GT mask:
    Top-1 Seg, mIoU, PxAP, COCO mask AP); None for an entry that is no score (counts, thresholds, names)."""
    if name.endswith("threshold") or metric_unit(name) != "%":
        return None
    if name == "top1_acc":
        return "all"
    if "seg" in name or "miou" in name or name == "pxap":
        return "mask"
    return "box" if "loc" in name or "maxboxacc" in name or name.startswith("coco_bbox") else None


def over_text(name: str, metrics: Dict[str, Any]) -> str:
    """The images score ``name`` is over, for a table: ``all 1360``, ``849 of 1360 with a mask`` ("" for no score)."""
    n = (metrics.get("over") or {}).get(name)
    if n is None:
        return ""
    kind = metric_population(name)
    return f"all {n}" if kind == "all" else f"{n} of {metrics['images']} with a {kind}"


def metric_unit(name: str) -> str:
    """The unit of entry ``name`` of :func:`evaluate_predictions`'s record, for a printed table: image counts,
    thresholds as a fraction of each map's maximum, "" for names, and percent for every score."""
    if name in ("images", "predicted") or name.startswith("images_with"):
        return "images"
    if name.endswith("threshold"):
        return "fraction of map max"
    return "" if name == "attribution" else "%"


def _box_of(result: Optional[Dict[str, Any]]) -> np.ndarray:
    """The xyxy box of an image's best result (none when the image has no result)."""
    return np.zeros((0, 4)) if result is None else _xywh_to_xyxy(result["bbox"])


def _mask_iou_of(result: Optional[Dict[str, Any]], mask: np.ndarray) -> float:
    """IoU of an image's best result's mask with its GT mask (0 when the result has no mask)."""
    if result is None or "segmentation" not in result:
        return 0.0
    return float(mask_iou(decode_mask(result["segmentation"])[None], mask[None])[0])


def _results_of(results: List[Dict[str, Any]], image_ids: List[int]) -> List[Dict[str, Any]]:
    """The results on ``image_ids``: COCO AP is over the annotated images, as its ground truth holds only those."""
    keep = set(image_ids)
    return [r for r in results if r["image_id"] in keep]


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


__all__ = ["check_categories", "collect_ground_truth", "evaluate_predictions", "metric_population", "metric_unit", "metrics_path", "over_text",
           "save_metrics"]
