"""GTSRB Final_Training / Final_Test trees with PPM images and ';'-separated GT CSVs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wsol.data import build_dataset
from wsol.errors import ConfigError, DataError

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def _ppm(path: Path, w: int, h: int, colour) -> None:
    """A w×h PPM whose pixel (y=1, x=2) has RGB ``colour``; the rest is a ramp."""
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(w, dtype=np.uint8)[None, :] * 3
    rgb[..., 1] = np.arange(h, dtype=np.uint8)[:, None] * 5
    rgb[1, 2] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))  # cv2 writes BGR


def _csv(path: Path, rows) -> None:
    path.write_text("\n".join([HEADER] + [";".join(str(v) for v in r) for r in rows]) + "\n")


def make_train(root: Path) -> None:
    c0 = root / "Final_Training" / "Images" / "00000"
    c2 = root / "Final_Training" / "Images" / "00002"
    _ppm(c0 / "00000_00000.ppm", 10, 9, (250, 0, 1))
    _ppm(c0 / "00000_00001.ppm", 12, 11, (1, 2, 3))
    _ppm(c2 / "00007_00029.ppm", 8, 8, (40, 50, 60))
    _csv(c0 / "GT-00000.csv", [("00000_00000.ppm", 10, 9, 1, 2, 5, 6, 0), ("00000_00001.ppm", 12, 11, 0, 0, 11, 10, 0)])
    _csv(c2 / "GT-00002.csv", [("00007_00029.ppm", 8, 8, 2, 3, 6, 7, 2)])


def make_test(root: Path, csv_dir: Path) -> None:
    images = root / "Final_Test" / "Images"
    _ppm(images / "00000.ppm", 10, 10, (9, 8, 7))
    _ppm(images / "00001.ppm", 14, 12, (70, 80, 90))
    images.joinpath("GT-final_test.test.csv").write_text(HEADER.rsplit(";", 1)[0] + "\n00000.ppm;10;10;1;1;8;8\n")
    csv_dir.mkdir(parents=True, exist_ok=True)
    rows = [("00000.ppm", 10, 10, 1, 1, 8, 8, 14), ("00001.ppm", 14, 12, 2, 3, 12, 10, 42)]
    _csv(csv_dir / "GT-final_test.csv", rows)


def test_gtsrb_train(tmp_path):
    make_train(tmp_path)
    ds = build_dataset("gtsrb", tmp_path, "train")
    assert len(ds) == 3 and ds.labels == [0, 0, 2]
    assert ds.num_classes == 43 and ds.class_names[14] == "Stop"
    assert ds.native_size == 32 and ds.has_masks is False and ds.skipped == []
    assert ds.mean == (0.3403, 0.3121, 0.3214) and ds.std == (0.2724, 0.2608, 0.2669)
    s = ds[0]
    assert s.name == "Final_Training/Images/00000/00000_00000.ppm"
    assert s.image_id == 1 and ds[1].image_id == 2 and ds[2].image_id == 200001
    assert s.image.shape == (3, 9, 10) and s.orig_size == (9, 10)
    assert torch.equal((s.image[:, 1, 2] * 255).round(), torch.tensor([250.0, 0.0, 1.0]))
    assert torch.equal((s.image[:, 4, 3] * 255).round(), torch.tensor([9.0, 20.0, 0.0]))
    # Roi (1,2)-(5,6) inclusive -> xyxy exclusive (1, 2, 6, 7).
    assert s.boxes.tolist() == [[1.0, 2.0, 6.0, 7.0]]
    assert ds[1].boxes.tolist() == [[0.0, 0.0, 12.0, 11.0]]  # the whole 12×11 image
    assert s.mask is None


def test_gtsrb_test_csv_locations(tmp_path):
    make_test(tmp_path, tmp_path)
    ds = build_dataset("gtsrb", tmp_path, "test")
    assert ds.labels == [14, 42]
    assert [ds[i].image_id for i in range(2)] == [1, 2]
    assert ds[1].name == "Final_Test/Images/00001.ppm"
    assert ds[1].boxes.tolist() == [[2.0, 3.0, 13.0, 11.0]]
    assert torch.equal((ds[1].image[:, 1, 2] * 255).round(), torch.tensor([70.0, 80.0, 90.0]))
    (tmp_path / "GT-final_test.csv").rename(tmp_path / "Final_Test" / "Images" / "GT-final_test.csv")
    assert build_dataset("gtsrb", tmp_path, "test").labels == [14, 42]


def test_gtsrb_nested_gtsrb_folder(tmp_path):
    make_train(tmp_path / "GTSRB")
    ds = build_dataset("gtsrb", tmp_path, "train")
    assert len(ds) == 3 and ds[0].name == "GTSRB/Final_Training/Images/00000/00000_00000.ppm"


def test_gtsrb_unlabelled_test_csv_only(tmp_path):
    make_test(tmp_path, tmp_path)
    (tmp_path / "GT-final_test.csv").unlink()
    with pytest.raises(DataError, match=r"GT-final_test.csv.*without ClassId"):
        build_dataset("gtsrb", tmp_path, "test")


def test_gtsrb_csv_errors(tmp_path):
    make_train(tmp_path)
    csv_path = tmp_path / "Final_Training" / "Images" / "00000" / "GT-00000.csv"
    good = csv_path.read_text()
    csv_path.write_text(good + "00000_00002.ppm;10;9;1;2;5\n")
    with pytest.raises(DataError, match=r"GT-00000.csv line 4"):
        build_dataset("gtsrb", tmp_path, "train")
    csv_path.write_text(good.replace(";5;6;0", ";5;6;43"))
    with pytest.raises(DataError, match=r"GT-00000.csv line 2: ClassId 43"):
        build_dataset("gtsrb", tmp_path, "train")
    csv_path.write_text(good.replace(";5;6;0", ";5;6;1"))
    with pytest.raises(DataError, match=r"GT-00000.csv line 2: ClassId 1 differs"):
        build_dataset("gtsrb", tmp_path, "train")
    csv_path.write_text(good.replace(";5;6;0", ";x;6;0"))
    with pytest.raises(DataError, match=r"GT-00000.csv line 2"):
        build_dataset("gtsrb", tmp_path, "train")
    csv_path.write_text(good.replace("10;9;1;2;5;6", "10;9;1;2;10;6"))
    with pytest.raises(DataError, match=r"GT-00000.csv line 2: Roi"):
        build_dataset("gtsrb", tmp_path, "train")
    csv_path.write_text(good.replace("Roi.X2", "RoiX2"))
    with pytest.raises(DataError, match=r"GT-00000.csv line 1.*Roi.X2"):
        build_dataset("gtsrb", tmp_path, "train")
    csv_path.unlink()
    with pytest.raises(DataError, match="GT-00000.csv"):
        build_dataset("gtsrb", tmp_path, "train")
    with pytest.raises(DataError, match="split 'val'"):
        build_dataset("gtsrb", tmp_path, "val")


def test_gtsrb_missing_and_corrupt_images(tmp_path):
    make_train(tmp_path)
    folder = tmp_path / "Final_Training" / "Images" / "00000"
    (folder / "00000_00001.ppm").unlink()
    with pytest.raises(DataError, match="00000_00001.ppm"):
        build_dataset("gtsrb", tmp_path, "train")
    (folder / "00000_00001.ppm").write_bytes(b"P6\n garbage")
    ds = build_dataset("gtsrb", tmp_path, "train")  # existence is fine; decoding fails on access
    with pytest.raises(DataError, match="00000_00001.ppm"):
        ds[1]
    ds = build_dataset("gtsrb", tmp_path, "train", skip_corrupt=True)
    assert len(ds) == 2 and ds.labels == [0, 2]
    assert ds.skipped == ["Final_Training/Images/00000/00000_00001.ppm: cannot decode"]
    (folder / "00000_00000.ppm").unlink()
    ds = build_dataset("gtsrb", tmp_path, "train", skip_corrupt=True)
    assert ds.labels == [2] and ds.skipped[0] == "Final_Training/Images/00000/00000_00000.ppm: missing"


def test_gtsrb_balance(tmp_path):
    make_train(tmp_path)
    ds = build_dataset("gtsrb", tmp_path, "train", balance_to=3)
    assert ds.labels == [0, 0, 0, 2, 2, 2]
    assert [ds[i].image_id for i in range(6)] == [1, 2, 1, 200001, 200001, 200001]
    with pytest.raises(ConfigError, match="balance_to"):
        build_dataset("gtsrb", tmp_path, "train", balance_to=1)
