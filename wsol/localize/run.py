"""The `wsol localize` and `wsol evaluate` jobs: checkpoint + dataset → COCO results → metric table."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from wsol.data import build_dataset
from wsol.data.transforms import build_transform
from wsol.errors import DataError, WsolError
from wsol.export.coco import coco_eval, decode_mask, gt_annotation, gt_to_coco, load_results, meta_path, results_to_coco, write_results
from wsol.localize.predict import LocalizeSettings, MapMetrics, gather_predictions, localize_dataset, mask_in_original
from wsol.metrics.localization import max_iou
from wsol.metrics.segmentation import mask_iou
from wsol.models import load_model
from wsol.models.build import checkpoint_meta
from wsol.utils import distributed as dist
from wsol.utils.device import select_device
from wsol.utils.io import atomic_write_json

CATEGORY_OFFSET = 1  # COCO category ids are class index + 1 (COCO reserves 0).


def eval_dataset(name: str, root: Path, split: str, size: int, **options: Any):
    """The dataset with the evaluation transform: resize to the model's input size (boxes follow)."""
    return build_dataset(name, root, split, transform=build_transform("cub", train=False, size=size), **options)


def run_localize(
    checkpoint: Path,
    dataset: str,
    root: Path,
    out: Path,
    settings: LocalizeSettings,
    split: str = "test",
    device: Optional[str] = None,
    show_progress: bool = True,
    dataset_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Localize every image of ``split`` and write COCO results ``out`` plus ``<out>.meta.json``.

    Under torchrun each rank handles a shard; rank 0 merges and writes. Returns the meta record.
    """
    dev = select_device(device)
    model = load_model(checkpoint).to(dev)
    ck_meta = checkpoint_meta(checkpoint)
    data = eval_dataset(dataset, root, split, model.input_size, **(dataset_options or {}))
    if data.num_classes != model.num_classes:
        raise WsolError(f"checkpoint {checkpoint} has {model.num_classes} classes but dataset {dataset} has {data.num_classes}")
    metrics = MapMetrics(settings.thresholds(), with_masks=bool(getattr(data, "has_masks", False)))
    local = localize_dataset(model, data, settings, dev, evaluators=[metrics], show_progress=show_progress)
    predictions = gather_predictions(local)
    metrics.merge_ranks()
    thresholds = settings.thresholds()
    summary = metrics.summary()
    threshold = settings.threshold
    if settings.sweep:
        if "best_gt_known_threshold" not in summary:
            raise WsolError(f"--sweep needs ground-truth boxes, and dataset {dataset} has none; give --threshold instead")
        threshold = float(summary["best_gt_known_threshold"])
    j = int(np.argmin(np.abs(thresholds - threshold)))
    meta = {
        "attribution": settings.attribution,
        "threshold": float(thresholds[j]),
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
        "input_resolution_metrics": metrics.curves_at(float(thresholds[j])),
    }
    if dist.is_main_process():
        boxes = np.stack([np.nan_to_num(p.boxes[j], nan=0.0) for p in predictions]) if predictions else np.zeros((0, 4))
        masks = None
        if settings.masks:
            masks = [mask_in_original(p.map_u8, float(thresholds[j]), p.orig_size, p.to_orig) for p in predictions]  # type: ignore[arg-type]
        results = results_to_coco(
            [p.image_id for p in predictions],
            [p.pred + CATEGORY_OFFSET for p in predictions],
            boxes,
            [p.score for p in predictions],
            masks,
        )
        write_results(out, results, meta)
    dist.barrier()
    return meta


def collect_ground_truth(data) -> Dict[int, Dict[str, Any]]:
    """image_id → label, boxes (original pixels), optional mask and (height, width)."""
    from torch.utils.data import DataLoader

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


def _read_meta(pred: Path) -> Dict[str, Any]:
    path = meta_path(pred)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path} is not valid JSON") from None


def evaluate_predictions(pred: Path, dataset: str, root: Path, split: Optional[str] = None, iou_threshold: float = 0.5, **dataset_options: Any) -> Dict[str, Any]:
    """Score a COCO results file against the dataset's ground truth (original image pixels).

    Box metrics (Top-1 Acc, GT-Known Loc, Top-1 Loc) and, when the file has masks and the dataset
    has GT masks, Top-1 Seg and mIoU; plus COCOeval AP and the sweep metrics stored by `localize`.
    """
    pred = Path(pred)
    if not pred.is_file():
        raise DataError(f"prediction file not found: {pred}")
    meta = _read_meta(pred)
    if meta.get("dataset") not in (None, dataset):
        raise DataError(f"{pred} was made for dataset {meta['dataset']!r}, not {dataset!r}")
    split = split or meta.get("split", "test")
    data = build_dataset(dataset, root, split, **dataset_options)
    gt = collect_ground_truth(data)
    results = load_results(pred, known_image_ids=gt.keys())
    offset = int(meta.get("category_offset", CATEGORY_OFFSET))
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
    metrics: Dict[str, Any] = {"images": len(gt), "predicted": len(best), "top1_acc": 100.0 * sum(correct) / n}
    if has_boxes:
        metrics["gt_known_loc"] = 100.0 * sum(hits) / n
        metrics["top1_loc"] = 100.0 * sum(h and c for h, c in zip(hits, correct)) / n
    if has_masks:
        metrics["top1_seg"] = 100.0 * sum(seg_hits) / n
        metrics["miou"] = 100.0 * float(np.mean(ious)) if ious else 0.0
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
    return metrics


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


def save_metrics(pred: Path, metrics: Dict[str, Any]) -> Path:
    """Write ``<pred stem>.metrics.json`` beside the prediction file (atomically)."""
    path = Path(pred).with_suffix(".metrics.json")
    atomic_write_json(path, metrics)
    return path



def run_visualize(
    checkpoint: Path,
    dataset: str,
    root: Path,
    out: Path,
    attribution: str = "grad",
    threshold: float = 0.2,
    n: int = 16,
    split: str = "test",
    seed: int = 0,
    target: str = "pred",
    steps: Any = "wsol",
    device: Optional[str] = None,
) -> Path:
    """Draw ``n`` seeded random images with heatmap, GT box (red) and predicted box (green)."""
    from wsol.data import collate
    from wsol.localize.boxes import boxes_from_maps
    from wsol.localize.predict import compute_maps
    from wsol.report import overlay_grid

    settings = LocalizeSettings(attribution=attribution, target=target, steps=steps, threshold=threshold)
    dev = select_device(device)
    model = load_model(checkpoint).to(dev).eval()
    data = eval_dataset(dataset, root, split, model.input_size)
    if len(data) == 0:
        raise DataError(f"dataset {dataset} split {split} is empty")
    order = np.random.default_rng(seed).permutation(len(data))[: max(1, n)]
    batch = collate([data[int(i)] for i in order]).to(dev)
    with torch.no_grad():
        pred = model(batch.images).argmax(dim=1)
    target_classes = pred if target == "pred" else batch.labels
    maps = compute_maps(model, batch.images, target_classes, settings).cpu()
    boxes = [torch.from_numpy(b[0]) for b in boxes_from_maps(maps, [threshold], mode="largest")]
    names = list(getattr(data, "class_names", []))
    titles = [
        f"{names[int(p)] if names else int(p)}{'' if int(p) == int(l) else ' ✗'}"
        for p, l in zip(pred.tolist(), batch.labels.tolist())
    ]
    return overlay_grid(batch.images.cpu(), out, maps=maps, gt_boxes=batch.boxes, pred_boxes=boxes, titles=titles, masks=batch.masks)
