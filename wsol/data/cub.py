"""CUB-200-2011 in its official on-disk layout (the synthetic ``shapes`` set is written in it too).

Tree (``root`` is the folder that holds ``images.txt``; its parent is accepted as well)::

    images.txt               <image_id> <path under images/>
    image_class_labels.txt   <image_id> <class_id 1..K>
    classes.txt              <class_id> <class dir name>
    train_test_split.txt     <image_id> <1 = train, 0 = test>
    bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (float pixels)
    images/<class dir>/<file>
    segmentations/<class dir>/<file stem>.png   optional, soft grey masks (also looked up in root/..)

Boxes become ``xyxy`` with ``x2 = x + width`` (CUB's values are pixel edges, no -1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD, AnnotatedDataset, Record, Transform, check_files, check_split, option_path
from wsol.data.registry import DATASETS, check_options
from wsol.errors import DataError, DataFileMissingError


CUB_FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt", "bounding_boxes.txt")
CUB_SPLITS = ("train", "test")


def text_lines(path: Path, what: str = "") -> List[Tuple[int, str]]:
    """Non-blank, stripped lines of a UTF-8 text file with their 1-based numbers.

    A missing or non-UTF-8 file is a DataError naming it (and ``what``, the expected line form).
    """
    if not path.is_file():
        raise DataError(f"missing dataset file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        expected = f"; expected lines of the form '{what}'" if what else ""
        raise DataError(f"{path} is not UTF-8 text{expected}") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_rows(path: Path, fields: int, what: str, last_rest: bool = False) -> List[Tuple[int, List[str]]]:
    """Read a whitespace-separated text file as ``(line number, fields)`` rows, skipping blank lines.

    ``last_rest`` keeps everything after the first ``fields - 1`` fields as one field (paths, names).
    A missing file or a line with the wrong number of fields is a DataError naming file and line.
    """
    rows = []
    for lineno, stripped in text_lines(path, what):
        parts = stripped.split(None, fields - 1) if last_rest else stripped.split()
        if len(parts) != fields:
            raise DataError(f"{path}, line {lineno}: expected '{what}', got {stripped[:80]!r}")
        rows.append((lineno, parts))
    return rows


def parse_int(value: str, path: Path, lineno: int, what: str) -> int:
    """``int(value)`` or a DataError naming the file, line and field."""
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}, line {lineno}: {what} must be an integer, got {value!r}") from None


def parse_float(value: str, path: Path, lineno: int, what: str) -> float:
    """``float(value)`` (finite) or a DataError naming the file, line and field."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number):
        raise DataError(f"{path}, line {lineno}: {what} must be a finite number, got {value!r}")
    return number


def _per_image(path: Path, rows: List[Tuple[int, List[str]]], ids: Dict[int, int], what: str) -> Dict[int, Tuple[int, List[str]]]:
    """Index rows by image id, checking that each id is known and appears once."""
    out: Dict[int, Tuple[int, List[str]]] = {}
    for lineno, parts in rows:
        image_id = parse_int(parts[0], path, lineno, "image_id")
        if image_id not in ids:
            raise DataError(f"{path}, line {lineno}: image_id {image_id} is not listed in images.txt")
        if image_id in out:
            raise DataError(f"{path}, line {lineno}: image_id {image_id} appears twice (first on line {out[image_id][0]})")
        out[image_id] = (lineno, parts[1:])
    missing = [i for i in ids if i not in out]
    if missing:
        raise DataError(f"{path}: no {what} line for image_id {missing[0]} (images.txt line {ids[missing[0]]})")
    return out


def register_loader(name: str, load: Callable[..., Any], doc: str) -> Callable[..., Any]:
    """Register ``build_<name>(root, split, transform=None, **options)`` for a keyword-option loader.

    Options ``load`` does not take are a ConfigError naming them (:func:`check_options`).
    """

    def build(root: Path, split: str, transform: Optional[Transform] = None, **options: Any) -> Any:
        check_options(load, options, name)
        return load(Path(root), split, transform, **options)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = doc
    return DATASETS.register(name)(build)


def resolve_cub_root(root: Path) -> Path:
    """The folder holding ``images.txt``: ``root`` itself or ``root/CUB_200_2011``."""
    if (root / "images.txt").is_file():
        return root
    if (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    raise DataFileMissingError(
        f"{root / 'images.txt'} not found; point the root at the CUB_200_2011 folder that holds images.txt"
    )


def class_display_name(dir_name: str) -> str:
    """'001.Black_footed_Albatross' → 'Black_footed_Albatross' (CUB's numeric prefix dropped)."""
    head, sep, tail = dir_name.partition(".")
    return tail if sep and head.isdigit() and tail else dir_name


def parse_cub(root: Path) -> Tuple[List[str], List[Dict[str, Any]]]:
    """Parse CUB's text files; returns (class dir names, one dict per image in images.txt order).

    Each dict: image_id, path (under images/), label (0-based), train (bool), box (xyxy), line.
    """
    class_path = root / "classes.txt"
    classes = read_rows(class_path, 2, "<class_id> <class_name>", last_rest=True)
    class_names: List[str] = []
    for lineno, (cid, name) in classes:
        number = parse_int(cid, class_path, lineno, "class_id")
        if number != len(class_names) + 1:
            raise DataError(f"{class_path}, line {lineno}: class ids must run 1, 2, 3, ... in order; expected {len(class_names) + 1}, got {number}")
        class_names.append(name)
    if not class_names:
        raise DataError(f"{class_path} lists no classes")

    images_path = root / "images.txt"
    image_rows = read_rows(images_path, 2, "<image_id> <path>", last_rest=True)
    ids: Dict[int, int] = {}
    paths: Dict[int, str] = {}
    for lineno, (iid, rel) in image_rows:
        image_id = parse_int(iid, images_path, lineno, "image_id")
        if image_id in ids:
            raise DataError(f"{images_path}, line {lineno}: image_id {image_id} appears twice (first on line {ids[image_id]})")
        ids[image_id] = lineno
        paths[image_id] = rel
    if not ids:
        raise DataError(f"{images_path} lists no images")

    label_path = root / "image_class_labels.txt"
    labels = _per_image(label_path, read_rows(label_path, 2, "<image_id> <class_id>"), ids, "class label")
    split_path = root / "train_test_split.txt"
    splits = _per_image(split_path, read_rows(split_path, 2, "<image_id> <is_training_image>"), ids, "train/test")
    box_path = root / "bounding_boxes.txt"
    boxes = _per_image(box_path, read_rows(box_path, 5, "<image_id> <x> <y> <width> <height>"), ids, "bounding box")

    entries = []
    for image_id, lineno in ids.items():
        label_line, (cid,) = labels[image_id]
        label = parse_int(cid, label_path, label_line, "class_id")
        if not 1 <= label <= len(class_names):
            raise DataError(f"{label_path}, line {label_line}: class_id {label} is outside 1..{len(class_names)} (classes.txt)")
        split_line, (flag,) = splits[image_id]
        if flag not in ("0", "1"):
            raise DataError(f"{split_path}, line {split_line}: is_training_image must be 0 or 1, got {flag!r}")
        box_line, values = boxes[image_id]
        x, y, w, h = (parse_float(v, box_path, box_line, n) for v, n in zip(values, ("x", "y", "width", "height")))
        if w < 0 or h < 0:
            raise DataError(f"{box_path}, line {box_line}: width and height must be >= 0, got {w} {h}")
        entries.append(
            dict(image_id=image_id, path=paths[image_id], label=label - 1, train=flag == "1", box=(x, y, x + w, y + h), line=lineno)
        )
    return class_names, entries


def find_segmentations(root: Path, segmentations: Optional[Path]) -> Optional[Path]:
    """The segmentation folder: the explicit option, else ``root/segmentations`` or ``root/../segmentations``."""
    if segmentations is not None:
        seg = option_path(root, segmentations)
        if not seg.is_dir():
            raise DataError(f"segmentations folder not found: {seg}")
        return seg
    for candidate in (root / "segmentations", root.parent / "segmentations"):
        if candidate.is_dir():
            return candidate
    return None


class CubDataset(AnnotatedDataset):
    """CUB-format images with one box each and optional soft masks (foreground where value > 127)."""


def load_cub(
    root: Path,
    split: str,
    transform: Optional[Transform] = None,
    *,
    segmentations: Optional[Path] = None,
    masks: bool = True,
    skip_corrupt: bool = False,
    native_size: int = 224,
    mean: Tuple[float, float, float] = IMAGENET_MEAN,
    std: Tuple[float, float, float] = IMAGENET_STD,
    dataset_name: str = "CUB",
) -> CubDataset:
    """Build a CubDataset for ``split`` ('train' or 'test') from a CUB-format tree.

    Missing image (or mask) files raise a DataError naming the images.txt line; with
    ``skip_corrupt=True`` missing or undecodable images are left out and listed in ``skipped``.
    """
    check_split(split, CUB_SPLITS, dataset_name)
    root = resolve_cub_root(Path(root))
    class_dirs, entries = parse_cub(root)
    seg_dir = find_segmentations(root, segmentations) if masks else None
    image_dir = root / "images"
    records: List[Record] = []
    skipped: List[str] = []
    for entry in entries:
        if entry["train"] != (split == "train"):
            continue
        image_path = image_dir / entry["path"]
        mask_path = seg_dir / Path(entry["path"]).with_suffix(".png") if seg_dir is not None else None
        files = [image_path] + ([mask_path] if mask_path is not None else [])
        problem = check_files(files, skip_corrupt, f"images.txt line {entry['line']}")
        if problem is not None:
            skipped.append(f"{entry['path']}: {problem}")
            continue
        records.append(
            Record(
                name=entry["path"],
                label=entry["label"],
                image_id=entry["image_id"],
                boxes=np.asarray([entry["box"]], dtype=np.float32),
                image_path=image_path,
                mask_path=mask_path,
            )
        )
    return CubDataset(
        records,
        [class_display_name(c) for c in class_dirs],
        transform,
        has_masks=seg_dir is not None,
        native_size=native_size,
        mean=mean,
        std=std,
        skipped=skipped,
        root=root,
        split=split,
    )


build_cub = register_loader("cub", load_cub, "CUB-200-2011 (options: segmentations=PATH, masks=True, skip_corrupt=False, native_size=224).")


build_cub.splits = CUB_SPLITS  # type: ignore[attr-defined]
