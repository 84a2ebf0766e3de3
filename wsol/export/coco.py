"""COCO-format predictions and ground truth, and a quiet wrapper around pycocotools' COCOeval.

Results are the standard detection list ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}``, boxes in ORIGINAL image pixels. Map boxes back first with
``wsol.data.sample.boxes_to_original``. Masks are added as compressed RLE ``"segmentation"``.
GT dicts always carry ``"info"`` and ``"licenses"``: pycocotools 2.0.9–2.0.10 ``loadRes`` raises
``KeyError: 'info'`` without them.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from wsol.errors import DataError
from wsol.utils.io import atomic_write_json, file_sha256

PathLike = Union[str, Path]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def encode_mask(mask: Any) -> Dict[str, Any]:
    """H×W bool mask → compressed RLE ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    m = _np(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask must be H×W, got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Compressed RLE (counts as str or bytes) → H×W bool mask."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; harmless here.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(r).astype(bool)


def xyxy_to_xywh(box: Sequence[float]) -> List[float]:
    """``[x1, y1, x2, y2]`` (x2/y2 exclusive) → COCO ``[x, y, w, h]``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def results_to_coco(
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    boxes_xyxy: Any,
    scores: Sequence[float],
    masks: Optional[Sequence[Any]] = None,
) -> List[Dict[str, Any]]:
    """One COCO result dict per detection (row); boxes are xyxy in original-image pixels.

    ``masks`` (optional) holds one H×W bool mask per detection at the original image size; it is
    stored as compressed RLE in ``"segmentation"``.
    """
    boxes = _np(boxes_xyxy).astype(np.float64).reshape(-1, 4)
    ids, cats, sc = _np(image_ids).reshape(-1), _np(category_ids).reshape(-1), _np(scores).astype(np.float64).reshape(-1)
    n = len(boxes)
    if not (len(ids) == len(cats) == len(sc) == n) or (masks is not None and len(masks) != n):
        raise ValueError(f"results_to_coco needs equal lengths; got {len(ids)} ids, {len(cats)} categories, {n} boxes, {len(sc)} scores" + ("" if masks is None else f", {len(masks)} masks"))
    out: List[Dict[str, Any]] = []
    for i in range(n):
        rec: Dict[str, Any] = {"image_id": int(ids[i]), "category_id": int(cats[i]), "bbox": xyxy_to_xywh(boxes[i]), "score": float(sc[i])}
        if masks is not None:
            rec["segmentation"] = encode_mask(masks[i])
        out.append(rec)
    return out


def gt_annotation(ann_id: int, image_id: int, category_id: int, box_xyxy: Sequence[float], mask: Any = None) -> Dict[str, Any]:
    """A COCO GT annotation from an xyxy box (and optional H×W mask, stored as RLE)."""
    bbox = xyxy_to_xywh(box_xyxy)
    ann: Dict[str, Any] = {"id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id), "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
    if mask is not None:
        ann["segmentation"] = encode_mask(mask)
        ann["area"] = float(_np(mask).astype(bool).sum())
    return ann


def gt_to_coco(images: Iterable[Mapping[str, Any]], categories: Iterable[Mapping[str, Any]], annotations: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """A COCO GT dict that pycocotools accepts: always with ``info`` and ``licenses``.

    ``images`` need ``id``, ``width`` and ``height``; ``categories`` need ``id`` (``name``
    defaults to the id); ``annotations`` need ``image_id``, ``category_id`` and ``bbox`` (x y w h).
    Missing ``id`` (numbered from 1), ``area`` (w·h, or the mask area for RLE) and ``iscrowd`` (0)
    are filled in.
    """
    imgs = []
    for im in images:
        rec = dict(im)
        for key in ("id", "width", "height"):
            if key not in rec:
                raise ValueError(f"COCO image record {im!r} lacks {key!r}")
        rec["id"], rec["width"], rec["height"] = int(rec["id"]), int(rec["width"]), int(rec["height"])
        rec.setdefault("file_name", str(rec["id"]))
        imgs.append(rec)
    cats = []
    for c in categories:
        rec = dict(c)
        rec["id"] = int(rec["id"])
        rec.setdefault("name", str(rec["id"]))
        cats.append(rec)
    anns = []
    for k, a in enumerate(annotations, start=1):
        rec = dict(a)
        rec.setdefault("id", k)
        rec["bbox"] = [float(v) for v in rec["bbox"]]
        if "area" not in rec:
            seg = rec.get("segmentation")
            if isinstance(seg, dict):
                from pycocotools import mask as mask_utils

                counts = seg["counts"]
                rec["area"] = float(mask_utils.area({"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}))
            else:
                rec["area"] = rec["bbox"][2] * rec["bbox"][3]
        rec.setdefault("iscrowd", 0)
        rec["id"], rec["image_id"], rec["category_id"] = int(rec["id"]), int(rec["image_id"]), int(rec["category_id"])
        anns.append(rec)
    return {"info": {"description": "wsol ground truth"}, "licenses": [], "images": imgs, "categories": cats, "annotations": anns}


def meta_path(path: PathLike) -> Path:
    """``.../preds.json`` → ``.../preds.meta.json``."""
    p = Path(path)
    return p.with_name(p.stem + ".meta.json") if p.suffix == ".json" else p.with_name(p.name + ".meta.json")


def results_digest(path: PathLike) -> str:
    """SHA-256 of a results file's bytes: the meta file records it to prove the two belong together."""
    return file_sha256(path)


def write_results(path: PathLike, results: List[Dict[str, Any]], meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``results`` to ``path`` (e.g. preds.json), then ``meta`` to the sibling preds.meta.json, both
    atomically; the meta records the results' SHA-256, so a kill between the two writes leaves a pair
    that :func:`read_results_meta` refuses instead of new predictions described by an old meta."""
    target = Path(path)
    info = {"format": "coco-results", "count": len(results)}
    info.update(dict(meta or {}))
    atomic_write_json(target, results, indent=None)
    info["results_sha256"] = results_digest(target)
    atomic_write_json(meta_path(target), info)
    return target


def read_results_meta(path: PathLike) -> Dict[str, Any]:
    """The meta file of results ``path`` ({} when there is none), checked to belong to that file."""
    side = meta_path(path)
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{side} is not valid JSON; rerun wsol localize to write the pair again") from None
    if not isinstance(meta, dict) or meta.get("results_sha256") != results_digest(path):
        raise DataError(f"{side} does not belong to {Path(path).name} (an interrupted or mixed run); rerun wsol localize to write the pair again")
    return meta


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def load_results(path: PathLike, known_image_ids: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
    """Read and check a COCO results file; raise DataError (one sentence) when it is not one.

    With ``known_image_ids``, every result must refer to one of them.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"results file {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"results file {p} is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, list):
        raise DataError(f"results file {p} must hold a JSON list of COCO results, found a {type(data).__name__}")
    for i, r in enumerate(data):
        where = f"results file {p}, entry {i}"
        if not isinstance(r, dict):
            raise DataError(f"{where} is a {type(r).__name__}, expected an object with image_id, category_id, bbox/segmentation and score")
        for key in ("image_id", "category_id"):
            if not isinstance(r.get(key), int) or isinstance(r.get(key), bool):
                raise DataError(f"{where} needs an integer {key!r}")
        if not _is_number(r.get("score")):
            raise DataError(f"{where} needs a finite number 'score'")
        if "bbox" not in r and "segmentation" not in r:
            raise DataError(f"{where} has neither 'bbox' nor 'segmentation'")
        if "bbox" in r:
            b = r["bbox"]
            if not (isinstance(b, list) and len(b) == 4 and all(_is_number(v) for v in b)) or b[2] < 0 or b[3] < 0:
                raise DataError(f"{where} needs 'bbox' as [x, y, w, h] with 4 finite numbers and w, h >= 0")
        if "segmentation" in r:
            s = r["segmentation"]
            if not (isinstance(s, dict) and isinstance(s.get("counts"), str) and isinstance(s.get("size"), list) and len(s["size"]) == 2):
                raise DataError(f"{where} needs 'segmentation' as compressed RLE {{'size': [h, w], 'counts': str}}")
    if known_image_ids is not None:
        known = {int(i) for i in known_image_ids}
        unknown = sorted({r["image_id"] for r in data} - known)
        if unknown:
            shown = ", ".join(str(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise DataError(f"results file {p} refers to {len(unknown)} image id(s) not in the dataset ({shown}); was it made for another split?")
    return data


def _empty_results(gt: Any) -> Any:
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {"info": {}, "images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset.get("categories", [])), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def coco_eval(
    gt: Union[Mapping[str, Any], Any],
    results: List[Dict[str, Any]],
    iou_type: str = "bbox",
    use_cats: bool = True,
    image_ids: Optional[Sequence[int]] = None,
) -> Dict[str, float]:
    """Run pycocotools COCOeval quietly; returns the 12 summary stats (fractions, -1 = undefined).

    ``gt`` is a GT dict (see :func:`gt_to_coco`) or a ``pycocotools.coco.COCO``. An empty
    ``results`` list is scored as "no detections" rather than crashing pycocotools. For
    ``iou_type="segm"``, result ``bbox`` keys are dropped first, so areas come from the masks.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        if isinstance(gt, COCO):
            coco_gt = gt
        else:
            gt_dict = dict(gt)
            gt_dict.setdefault("info", {})
            gt_dict.setdefault("licenses", [])
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt_dict)
            coco_gt.createIndex()
        unknown = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
        if unknown:
            raise DataError(f"{len(unknown)} result image id(s) are not in the ground truth (e.g. {unknown[0]}); evaluate against the split the predictions were made for")
        res = copy.deepcopy(results)
        if iou_type == "segm":
            if any("segmentation" not in r for r in res):
                raise ValueError("segm evaluation needs a 'segmentation' in every result")
            for r in res:
                r.pop("bbox", None)
        coco_dt = coco_gt.loadRes(res) if res else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.params.useCats = int(bool(use_cats))
        if image_ids is not None:
            ev.params.imgIds = [int(i) for i in image_ids]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


__all__ = [
    "STAT_NAMES",
    "coco_eval",
    "decode_mask",
    "encode_mask",
    "gt_annotation",
    "gt_to_coco",
    "load_results",
    "meta_path",
    "read_results_meta",
    "results_digest",
    "results_to_coco",
    "write_results",
    "xyxy_to_xywh",
]
