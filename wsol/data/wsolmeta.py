"""Datasets described by clovaai/wsolevaluation metadata files (CUB, ILSVRC, OpenImages30k layouts).

Tree::

    <metadata>/<split>/image_ids.txt      <path>                     (one image a line; id = line order + 1)
    <metadata>/<split>/class_labels.txt   <path>,<label 0..K-1>
    <metadata>/<split>/image_sizes.txt    <path>,<width>,<height>    (optional; checked when images load)
    <metadata>/<split>/localization.txt   <path>,x0,y0,x1,y1         (boxes, several lines per image allowed)
                                       or <path>,<mask png>[,<ignore png>]   (OpenImages masks)
    <root>/<path>                         the images

``metadata`` defaults to ``root/metadata``. Mask paths are relative to ``mask_root`` (default ``root``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD, AnnotatedDataset, Record, Transform, check_files, check_split, option_path, read_mask_file
from wsol.data.cub import parse_float, parse_int, register_loader, text_lines
from wsol.data.sample import Sample
from wsol.errors import DataError

WSOLMETA_SPLITS = ("train", "val", "test")


def _fields(path: Path, lineno: int, line: str, count: int, what: str) -> List[str]:
    """Split ``line`` into ``count`` comma-separated fields (the path may not hold commas)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != count or not parts[0]:
        raise DataError(f"{path}, line {lineno}: expected '{what}', got {line[:80]!r}")
    return parts


def read_labels(path: Path) -> List[Tuple[int, str, int]]:
    """(line, image path, label) rows of a class_labels.txt."""
    rows = []
    for lineno, line in text_lines(path):
        name, label = _fields(path, lineno, line, 2, "<path>,<label>")
        value = parse_int(label, path, lineno, "label")
        if value < 0:
            raise DataError(f"{path}, line {lineno}: label must be >= 0, got {value}")
        rows.append((lineno, name, value))
    return rows


def resolve_metadata(root: Path, metadata: Optional[Path], split: str) -> Path:
    """The folder holding ``<split>/image_ids.txt``."""
    meta = option_path(root, metadata) if metadata is not None else root / "metadata"
    if not meta.is_dir():
        raise DataError(f"metadata folder {meta} not found; pass metadata=PATH (the folder holding train/, val/, test/)")
    if not (meta / split / "image_ids.txt").is_file():
        raise DataError(f"metadata folder {meta} has no {split}/image_ids.txt for split {split!r}")
    return meta


class WsolMetaDataset(AnnotatedDataset):
    """Images listed by wsolevaluation metadata; masks are the union of an image's mask files."""

    def __init__(self, *args: Any, masks: Dict[int, List[Path]], ignores: Dict[int, Path], sizes: Dict[int, Tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._masks = masks
        self._ignores = ignores
        self._sizes = sizes

    def mask_files(self, record: Record) -> List[Path]:
        return self._masks.get(record.image_id, [])

    def load_ignore(self, index: int) -> Optional[np.ndarray]:
        """The OpenImages 'ignore' region of item ``index`` (pixels a metric should skip), or None."""
        path = self._ignores.get(self.records[index].image_id)
        return None if path is None else read_mask_file(path)

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        expected = self._sizes.get(sample.image_id)
        if expected is not None and (sample.orig_size[1], sample.orig_size[0]) != expected:
            record = self.records[index]
            raise DataError(
                f"image {record.image_path} is {sample.orig_size[1]}x{sample.orig_size[0]} but image_sizes.txt says {expected[0]}x{expected[1]}"
            )
        return sample


def _class_names(meta: Path, num_classes: Optional[int], current: List[Tuple[int, str, int]], split: str) -> List[str]:
    """Class names from the image folders when each label maps to one folder, else 'class_<k>'."""
    rows = list(current)
    for other in WSOLMETA_SPLITS:
        path = meta / other / "class_labels.txt"
        if other != split and path.is_file():
            rows += read_labels(path)
    count = num_classes if num_classes is not None else max((r[2] for r in rows), default=-1) + 1
    folders: Dict[int, set] = {}
    for _, name, label in rows:
        folders.setdefault(label, set()).add(Path(name).parent.name)
    names = []
    for k in range(count):
        found = folders.get(k, set())
        names.append(next(iter(found)) if len(found) == 1 and next(iter(found)) else f"class_{k:03d}")
    return names if len(set(names)) == len(names) else [f"class_{k:03d}" for k in range(count)]


def load_wsolmeta(
    root: Path,
    split: str,
    transform: Optional[Transform] = None,
    *,
    metadata: Optional[Path] = None,
    mask_root: Optional[Path] = None,
    num_classes: Optional[int] = None,
    skip_corrupt: bool = False,
    native_size: int = 224,
    mean: Tuple[float, float, float] = IMAGENET_MEAN,
    std: Tuple[float, float, float] = IMAGENET_STD,
) -> WsolMetaDataset:
    """Build the ``split`` ('train', 'val' or 'test') of a wsolevaluation-style dataset."""
    from wsol.data.cub import class_display_name
    check_split(split, WSOLMETA_SPLITS, "wsolmeta")
    root = Path(root)
    meta = resolve_metadata(root, metadata, split)
    folder = meta / split
    mask_base = option_path(root, mask_root) if mask_root is not None else root

    ids_path = folder / "image_ids.txt"
    order: Dict[str, Tuple[int, int]] = {}
    for index, (lineno, name) in enumerate(text_lines(ids_path)):
        if name in order:
            raise DataError(f"{ids_path}, line {lineno}: {name} is listed twice (first on line {order[name][1]})")
        order[name] = (index + 1, lineno)
    if not order:
        raise DataError(f"{ids_path} lists no images")

    def known(path: Path, lineno: int, name: str) -> int:
        if name not in order:
            raise DataError(f"{path}, line {lineno}: {name} is not listed in {ids_path.name}")
        return order[name][0]

    label_path = folder / "class_labels.txt"
    label_rows = read_labels(label_path)
    labels: Dict[int, int] = {}
    for lineno, name, label in label_rows:
        image_id = known(label_path, lineno, name)
        if image_id in labels:
            raise DataError(f"{label_path}, line {lineno}: {name} has a second label")
        if num_classes is not None and label >= num_classes:
            raise DataError(f"{label_path}, line {lineno}: label {label} is outside 0..{num_classes - 1}")
        labels[image_id] = label
    for name, (image_id, lineno) in order.items():
        if image_id not in labels:
            raise DataError(f"{label_path}: no label for {name} ({ids_path.name} line {lineno})")

    sizes: Dict[int, Tuple[int, int]] = {}
    size_path = folder / "image_sizes.txt"
    if size_path.is_file():
        for lineno, line in text_lines(size_path):
            name, w, h = _fields(size_path, lineno, line, 3, "<path>,<width>,<height>")
            sizes[known(size_path, lineno, name)] = (parse_int(w, size_path, lineno, "width"), parse_int(h, size_path, lineno, "height"))

    boxes: Dict[int, List[Tuple[float, float, float, float]]] = {}
    masks: Dict[int, List[Path]] = {}
    ignores: Dict[int, Path] = {}
    loc_path = folder / "localization.txt"
    if loc_path.is_file():
        for lineno, line in text_lines(loc_path):
            parts = [p.strip() for p in line.split(",")]
            image_id = known(loc_path, lineno, parts[0])
            if len(parts) == 5:
                x0, y0, x1, y1 = (parse_float(v, loc_path, lineno, n) for v, n in zip(parts[1:], ("x0", "y0", "x1", "y1")))
                if x1 < x0 or y1 < y0:
                    raise DataError(f"{loc_path}, line {lineno}: box needs x0 <= x1 and y0 <= y1, got {x0} {y0} {x1} {y1}")
                boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
            elif len(parts) in (2, 3) and parts[1]:
                masks.setdefault(image_id, []).append(mask_base / parts[1])
                if len(parts) == 3 and parts[2]:
                    ignores[image_id] = mask_base / parts[2]
            else:
                raise DataError(f"{loc_path}, line {lineno}: expected '<path>,x0,y0,x1,y1' or '<path>,<mask>[,<ignore>]', got {line[:80]!r}")

    class_names = [class_display_name(n) for n in _class_names(meta, num_classes, label_rows, split)]
    records: List[Record] = []
    skipped: List[str] = []
    for name, (image_id, lineno) in order.items():
        image_path = root / name
        files = [image_path] + masks.get(image_id, [])
        problem = check_files(files, skip_corrupt, f"{ids_path.name} line {lineno}")
        if problem is not None:
            skipped.append(f"{name}: {problem}")
            continue
        box_list = boxes.get(image_id, [])
        records.append(
            Record(
                name=name,
                label=labels[image_id],
                image_id=image_id,
                boxes=np.asarray(box_list, dtype=np.float32).reshape(-1, 4),
                image_path=image_path,
            )
        )
    return WsolMetaDataset(
        records,
        class_names,
        transform,
        masks=masks,
        ignores=ignores,
        sizes=sizes,
        has_masks=bool(masks),
        native_size=native_size,
        mean=mean,
        std=std,
        skipped=skipped,
        root=root,
        split=split,
    )


build_wsolmeta = register_loader(
    "wsolmeta", load_wsolmeta, "wsolevaluation metadata (options: metadata=PATH, mask_root=PATH, num_classes=K, skip_corrupt=False)."
)
