"""Bring-your-own images with a COCO "instances" JSON: one weak label per image, boxes and masks for evaluation.

Tree (``root``)::

    annotations/instances_<split>.json   (or instances_<split>.json, or annotations.json for any split,
                                          or the ``annotations=`` option)
    images/<file_name>                   (or <split>2017/<file_name>, <split>/<file_name>,
                                          <file_name> relative to root, or the ``images=`` option)

Label = category of the image's largest annotation (by ``area``, else bbox area; non-crowd first),
with category ids mapped to 0..K-1 in sorted id order. Boxes: every annotation's ``bbox`` (x, y, w, h)
as xyxy. Mask: union of every annotation's segmentation (polygons or RLE). Images without
annotations are left out and listed in ``skipped``. ``image_id`` is the COCO image id.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD, AnnotatedDataset, Record, Transform, check_files, option_path
from wsol.data.cub import register_loader
from wsol.errors import DataError


def find_annotations(root: Path, split: str, annotations: Optional[Path]) -> Path:
    """The instances JSON for ``split``: the option, else the standard places under ``root``."""
    if annotations is not None:
        path = option_path(root, annotations)
        if not path.is_file():
            raise DataError(f"annotations file {path} not found")
        return path
    candidates = [root / "annotations" / f"instances_{split}.json", root / f"instances_{split}.json", root / "annotations.json"]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DataError(f"no COCO annotations for split {split!r}; tried {tried} (or pass annotations=PATH)")


def load_coco_json(path: Path) -> Dict[str, Any]:
    """Read and structurally check a COCO instances JSON; problems name the file and the entry."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing list {key!r} (a COCO instances file has images, annotations and categories)")
    for key, needed in (("images", ("id", "file_name")), ("annotations", ("image_id", "category_id", "bbox")), ("categories", ("id",))):
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise DataError(f"{path}: {key}[{index}] is not an object")
            for field in needed:
                if field not in entry:
                    raise DataError(f"{path}: {key}[{index}] lacks {field!r}")
    return data


def _bbox(path: Path, index: int, ann: Dict[str, Any]) -> Tuple[float, float, float, float]:
    box = ann["bbox"]
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DataError(f"{path}: annotations[{index}].bbox must be 4 numbers [x, y, w, h], got {box!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise DataError(f"{path}: annotations[{index}].bbox must be finite with w, h >= 0, got {box!r}")
    return x, y, x + w, y + h


def _find_image_dir(root: Path, split: str, file_name: str, images: Optional[Path]) -> Path:
    if images is not None:
        folder = option_path(root, images)
        if not folder.is_dir():
            raise DataError(f"image folder {folder} not found")
        return folder
    candidates = [root / "images", root / "images" / split, root / f"{split}2017", root / split, root]
    for folder in candidates:
        if (folder / file_name).is_file():
            return folder
    return candidates[0] if candidates[0].is_dir() else root


class CocoDataset(AnnotatedDataset):
    """Images of a COCO instances file; the mask is decoded from the stored segmentations."""

    def __init__(self, *args: Any, segmentations: Dict[int, List[Any]], source: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._segmentations = segmentations
        self._source = source

    def load_mask(self, record: Record, shape: Tuple[int, int]) -> Optional[np.ndarray]:
        """Union of the image's instance masks (polygons, uncompressed or compressed RLE)."""
        from pycocotools import mask as mask_utils

        if not self.has_masks:
            return None
        h, w = shape
        union = np.zeros((h, w), dtype=bool)
        for index, seg in self._segmentations.get(record.image_id, []):
            try:
                if isinstance(seg, list):
                    polygons = [p for p in seg if len(p) >= 6]
                    if not polygons:
                        continue
                    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
                elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                    rle = mask_utils.frPyObjects(seg, *seg["size"])
                elif isinstance(seg, dict) and "counts" in seg:
                    rle = dict(seg)
                    if isinstance(rle["counts"], str):
                        rle["counts"] = rle["counts"].encode("ascii")
                else:
                    raise ValueError("not a polygon list or RLE")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' own numpy-2 notice
                    part = mask_utils.decode(rle).astype(bool)
            except (ValueError, TypeError, KeyError) as err:
                raise DataError(f"{self._source}: annotations[{index}].segmentation cannot be decoded ({err})") from None
            if part.shape != (h, w):
                raise DataError(f"{self._source}: annotations[{index}] mask is {part.shape[1]}x{part.shape[0]} but image {record.image_path} is {w}x{h}")
            union |= part
        return union


def load_coco(
    root: Path,
    split: str,
    transform: Optional[Transform] = None,
    *,
    annotations: Optional[Path] = None,
    images: Optional[Path] = None,
    skip_corrupt: bool = False,
    native_size: int = 224,
    mean: Tuple[float, float, float] = IMAGENET_MEAN,
    std: Tuple[float, float, float] = IMAGENET_STD,
) -> CocoDataset:
    """Build a dataset from a COCO instances JSON and its image folder (see the module docstring)."""
    root = Path(root)
    source = find_annotations(root, split, annotations)
    data = load_coco_json(source)
    cat_ids = sorted({int(c["id"]) for c in data["categories"]})
    names_by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    contiguous = {cid: k for k, cid in enumerate(cat_ids)}
    image_entries: Dict[int, Dict[str, Any]] = {}
    for index, entry in enumerate(data["images"]):
        image_id = int(entry["id"])
        if image_id in image_entries:
            raise DataError(f"{source}: images[{index}] repeats image id {image_id}")
        image_entries[image_id] = entry

    per_image: Dict[int, List[Tuple[int, Dict[str, Any]]]] = {}
    for index, ann in enumerate(data["annotations"]):
        if int(ann["category_id"]) not in contiguous:
            raise DataError(f"{source}: annotations[{index}] has category_id {ann['category_id']} that is not in 'categories'")
        if int(ann["image_id"]) not in image_entries:
            raise DataError(f"{source}: annotations[{index}] has image_id {ann['image_id']} that is not in 'images'")
        per_image.setdefault(int(ann["image_id"]), []).append((index, ann))

    first = next(iter(image_entries.values()), None)
    if first is None:
        raise DataError(f"{source} lists no images")
    image_dir = _find_image_dir(root, split, str(first["file_name"]), images)
    has_masks = any(ann.get("segmentation") for ann in data["annotations"])

    records: List[Record] = []
    skipped: List[str] = []
    segmentations: Dict[int, List[Any]] = {}
    for image_id, entry in image_entries.items():
        name = str(entry["file_name"])
        anns = per_image.get(image_id, [])
        if not anns:
            skipped.append(f"{name}: no annotations")
            continue
        image_path = image_dir / name
        problem = check_files([image_path], skip_corrupt, f"image id {image_id} in {source}")
        if problem is not None:
            skipped.append(f"{name}: {problem}")
            continue
        boxes = [_bbox(source, index, ann) for index, ann in anns]
        keys = [
            (0 if ann.get("iscrowd", 0) else 1, float(ann.get("area", (box[2] - box[0]) * (box[3] - box[1]))))
            for (_, ann), box in zip(anns, boxes)
        ]
        largest = anns[max(range(len(anns)), key=keys.__getitem__)][1]
        segmentations[image_id] = [(index, ann["segmentation"]) for index, ann in anns if ann.get("segmentation")]
        records.append(
            Record(
                name=name,
                label=contiguous[int(largest["category_id"])],
                image_id=image_id,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                image_path=image_path,
            )
        )
    return CocoDataset(
        records,
        [names_by_id[c] for c in cat_ids],
        transform,
        segmentations=segmentations,
        source=source,
        has_masks=has_masks,
        native_size=native_size,
        mean=mean,
        std=std,
        skipped=skipped,
        root=root,
        split=split,
    )


build_coco = register_loader("coco", load_coco, "COCO instances JSON + images (options: annotations=PATH, images=PATH, skip_corrupt=False).")
