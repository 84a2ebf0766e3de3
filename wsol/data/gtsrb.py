"""GTSRB (German Traffic Sign Recognition Benchmark), the official "Final" PPM release.

Train: ``Final_Training/Images/000NN/*.ppm`` with one ``GT-000NN.csv`` per class folder.
Test: ``Final_Test/Images/*.ppm`` with the labelled ``GT-final_test.csv`` (a separate download;
the images folder ships only ``GT-final_test.test.csv`` without ClassId), found either in
``Final_Test/Images/`` or directly in ``root``. ``root`` may also be the folder that contains
``GTSRB/``. CSVs are semicolon-separated: Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId.

Boxes: GTSRB's Roi.X2/Roi.Y2 are *inclusive* pixel coordinates, so the sample box (xyxy, x2/y2
exclusive) is (X1, Y1, X2 + 1, Y2 + 1).

Image ids: train ``class_id * 100000 + n`` where n is the 1-based data row in that class's CSV;
test ``n + 1`` where the file is ``n.ppm`` (00000.ppm → 1). Both are stable across subsets.

Normalisation uses the commonly used GTSRB training-set statistics mean (0.3403, 0.3121,
0.3214), std (0.2724, 0.2608, 0.2669).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from wsol.data.base import AnnotatedDataset, Record, Transform, check_flag, check_split
from wsol.data.flowers import apply_balance, check_records
from wsol.data.registry import DATASETS
from wsol.errors import DataError, DataFileMissingError

GTSRB_CLASSES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
)
GTSRB_MEAN = (0.3403, 0.3121, 0.3214)
GTSRB_STD = (0.2724, 0.2608, 0.2669)
TRAIN_ID_STRIDE = 100000

_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_TEST_CSV = "GT-final_test.csv"


def _base(root: Path, folder: str) -> Path:
    for base in (root, root / "GTSRB"):
        if (base / folder).is_dir():
            return base
    raise DataFileMissingError(f"no {folder}/ folder in {root} (nor in {root / 'GTSRB'})")


def read_gt_csv(path: Path) -> List[Tuple[int, str, np.ndarray, int]]:
    """Parse a GTSRB ground-truth CSV into (line number, filename, box xyxy exclusive, class id).

    Every malformed row is a DataError naming the file and line.
    """
    if not path.is_file():
        raise DataFileMissingError(f"file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not lines:
        raise DataError(f"{path} is empty; expected the header {';'.join(_COLUMNS)}")
    header = [h.strip() for h in lines[0].split(";")]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path} line 1: header lacks column(s) {', '.join(missing)}")
    col = {c: header.index(c) for c in _COLUMNS}
    rows = []
    for lineno, fields in enumerate(csv.reader(lines[1:], delimiter=";"), start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataError(f"{path} line {lineno}: expected {len(header)} ';'-separated fields, got {len(fields)}")
        name = fields[col["Filename"]].strip()
        try:
            w, h, x1, y1, x2, y2, cls = (int(fields[col[c]]) for c in _COLUMNS[1:])
        except ValueError:
            raise DataError(f"{path} line {lineno}: Width..ClassId must be integers") from None
        if not name:
            raise DataError(f"{path} line {lineno}: empty Filename")
        if not 0 <= cls < len(GTSRB_CLASSES):
            raise DataError(f"{path} line {lineno}: ClassId {cls} is outside 0..{len(GTSRB_CLASSES) - 1}")
        if not (0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h):
            raise DataError(f"{path} line {lineno}: Roi ({x1},{y1})-({x2},{y2}) does not fit a {w}x{h} image")
        box = np.array([[x1, y1, x2 + 1, y2 + 1]], dtype=np.float32)
        rows.append((lineno, name, box, cls))
    return rows


def _train_records(root: Path) -> List[Record]:
    base = _base(root, "Final_Training")
    images = base / "Final_Training" / "Images"
    if not images.is_dir():
        raise DataFileMissingError(f"folder not found: {images}")
    folders = sorted(p for p in images.iterdir() if p.is_dir() and re.fullmatch(r"\d{5}", p.name))
    if not folders:
        raise DataError(f"no class folders (00000 … 00042) in {images}")
    records = []
    for folder in folders:
        class_id = int(folder.name)
        if class_id >= len(GTSRB_CLASSES):
            raise DataError(f"class folder {folder} is outside 00000..{len(GTSRB_CLASSES) - 1:05d}")
        csv_path = folder / f"GT-{folder.name}.csv"
        for n, (lineno, name, box, cls) in enumerate(read_gt_csv(csv_path), start=1):
            if cls != class_id:
                raise DataError(f"{csv_path} line {lineno}: ClassId {cls} differs from its folder's class {class_id}")
            records.append(
                Record(
                    name=(folder / name).relative_to(root).as_posix(),
                    label=cls,
                    image_id=class_id * TRAIN_ID_STRIDE + n,
                    boxes=box,
                    image_path=folder / name,
                )
            )
    return records


def _test_records(root: Path) -> List[Record]:
    base = _base(root, "Final_Test")
    images = base / "Final_Test" / "Images"
    candidates = [images / _TEST_CSV, root / _TEST_CSV, base / _TEST_CSV]
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise DataError(
            f"labelled {_TEST_CSV} not found in {images} or {root}; the test images ship only "
            f"GT-final_test.test.csv without ClassId, so get the GTSRB test ground truth and put {_TEST_CSV} there"
        )
    records = []
    seen: Dict[int, int] = {}
    for lineno, name, box, cls in read_gt_csv(csv_path):
        stem = Path(name).stem
        if not stem.isdigit():
            raise DataError(f"{csv_path} line {lineno}: test file name {name!r} is not <number>.ppm")
        image_id = int(stem) + 1
        if image_id in seen:
            raise DataError(f"{csv_path} line {lineno}: {name} is listed again (first on line {seen[image_id]})")
        seen[image_id] = lineno
        records.append(
            Record(
                name=(images / name).relative_to(root).as_posix(),
                label=cls,
                image_id=image_id,
                boxes=box,
                image_path=images / name,
            )
        )
    return records


@DATASETS.register("gtsrb")
def build_gtsrb(
    root: Path,
    split: str = "train",
    transform: Optional[Transform] = None,
    balance_to: Optional[int] = None,
    skip_corrupt: bool = False,
) -> AnnotatedDataset:
    """GTSRB split train / test from ``root``; ``balance_to`` repeats images per class to that count."""
    check_split(split, ("train", "test"), "gtsrb")
    check_flag("skip_corrupt", skip_corrupt)
    root = Path(root)
    records = _train_records(root) if split == "train" else _test_records(root)
    records, skipped = check_records(records, skip_corrupt)
    records = apply_balance(records, balance_to)
    return AnnotatedDataset(
        records, GTSRB_CLASSES, transform, mean=GTSRB_MEAN, std=GTSRB_STD, native_size=32, skipped=skipped,
    )


build_gtsrb.splits = ("train", "test")  # type: ignore[attr-defined]
