"""SVHN format-2 .mat files (X: 32×32×3×N uint8, y: N×1 with 10 meaning the digit 0)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from wsol.data import build_dataset
from wsol.errors import DataError


def _write_mat(path: Path, labels, seed: int, marker=None, **extra) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)
    if marker is not None:
        x[5, 7, :, 1] = marker  # image 2 (0-based 1), row 5, column 7
    scipy.io.savemat(str(path), {"X": x, "y": np.asarray(labels, dtype=np.uint8).reshape(-1, 1), **extra})
    return x


def test_svhn_splits_labels_pixels(tmp_path):
    x = _write_mat(tmp_path / "train_32x32.mat", [1, 10, 5, 9], seed=0, marker=(11, 22, 33))
    _write_mat(tmp_path / "test_32x32.mat", [10, 3], seed=1)
    train = build_dataset("svhn", tmp_path, "train")
    assert len(train) == 4
    assert train.labels == [1, 0, 5, 9]
    assert train.class_names == [str(d) for d in range(10)] and train.num_classes == 10
    assert train.native_size == 32 and train.has_masks is False
    assert train.mean == (0.4377, 0.4438, 0.4728) and train.std == (0.1980, 0.2010, 0.1970)
    s = train[1]
    assert s.label == 0 and s.image_id == 2 and s.name == "train_32x32.mat[1]"
    assert torch.equal((s.image[:, 5, 7] * 255).round(), torch.tensor([11.0, 22.0, 33.0]))
    full = (train[3].image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(full, x[:, :, :, 3])
    assert s.boxes.shape == (0, 4) and s.mask is None
    test = build_dataset("svhn", tmp_path, "test")
    assert test.labels == [0, 3] and [test[i].image_id for i in range(2)] == [1, 2]


def test_svhn_extra_and_errors(tmp_path):
    _write_mat(tmp_path / "train_32x32.mat", [1, 2], seed=0)
    with pytest.raises(DataError, match="extra_32x32.mat"):
        build_dataset("svhn", tmp_path, "extra")
    _write_mat(tmp_path / "extra_32x32.mat", [4, 4, 10], seed=2)
    assert build_dataset("svhn", tmp_path, "extra").labels == [4, 4, 0]
    with pytest.raises(DataError, match="split 'val'"):
        build_dataset("svhn", tmp_path, "val")
    _write_mat(tmp_path / "test_32x32.mat", [1, 11], seed=3)
    with pytest.raises(DataError, match=r"test_32x32.mat.*label 11"):
        build_dataset("svhn", tmp_path, "test")
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 1), np.uint8)})
    with pytest.raises(DataError, match=r"test_32x32.mat.*'y'"):
        build_dataset("svhn", tmp_path, "test")
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match="3 labels"):
        build_dataset("svhn", tmp_path, "test")
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="test_32x32.mat"):
        build_dataset("svhn", tmp_path, "test")
