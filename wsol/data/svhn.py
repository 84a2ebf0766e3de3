"""SVHN cropped digits (format 2): ``train_32x32.mat``, ``test_32x32.mat``, optional ``extra_32x32.mat``.

Each file holds ``X`` (32×32×3×N uint8) and ``y`` (N×1, 1..10 where 10 means the digit 0; a 0 is
also read as the digit 0). Labels become 0..9 = the digit. Normalisation uses the commonly used
SVHN training-set statistics mean (0.4377, 0.4438, 0.4728), std (0.1980, 0.2010, 0.1970).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from wsol.data.base import Transform, check_split
from wsol.data.cifar import ArrayDataset
from wsol.data.flowers import load_mat
from wsol.data.registry import DATASETS
from wsol.errors import DataError

SVHN_CLASSES = tuple(str(d) for d in range(10))
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


@DATASETS.register("svhn")
def build_svhn(
    root: Path,
    split: str = "train",
    transform: Optional[Transform] = None,
    skip_corrupt: bool = False,
) -> ArrayDataset:
    """SVHN split train / test / extra from ``root``. Image ids are 1-based positions in the file."""
    check_split(split, list(_FILES), "svhn")
    path = Path(root) / _FILES[split]
    mats = load_mat(path, ["X", "y"])
    x, y = mats["X"], mats["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: 'X' must be a 32×32×3×N uint8 array, got {x.shape} {x.dtype}")
    labels = np.asarray(y).reshape(-1)
    if len(labels) != x.shape[3]:
        raise DataError(f"{path}: {len(labels)} labels in 'y' for {x.shape[3]} images in 'X'")
    if labels.size and (not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels))):
        raise DataError(f"{path}: 'y' must hold integer labels")
    labels = labels.astype(np.int64)
    bad = np.nonzero((labels < 0) | (labels > 10))[0]
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} of image {bad[0] + 1} is outside 1..10")
    labels = labels % 10
    images = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)))
    return ArrayDataset(
        images, labels, SVHN_CLASSES, np.arange(1, len(images) + 1), [(_FILES[split], 0)], transform,
        mean=SVHN_MEAN, std=SVHN_STD, native_size=32,
    )


build_svhn.splits = ("train", "test")  # type: ignore[attr-defined]  # 'extra' is optional
