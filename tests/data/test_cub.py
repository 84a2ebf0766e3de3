"""The CUB-200-2011 loader on a tiny tree in the official format (see tests/conftest.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wsol.data import build_dataset, collate
from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD
from wsol.errors import DataError


def test_labels_boxes_splits_ids(cub_tree: Path) -> None:
    train = build_dataset("cub", cub_tree, "train")
    test = build_dataset("cub", cub_tree, "test")
    assert [r.image_id for r in train.records] == [1, 3]
    assert [r.image_id for r in test.records] == [2, 4, 5]
    assert train.labels == [0, 1] and test.labels == [0, 1, 1]
    assert train.class_names == ["Red_bird", "Blue_bird"] and train.num_classes == 2
    assert train.native_size == 224 and train.has_masks
    assert train.mean == IMAGENET_MEAN and train.std == IMAGENET_STD
    sample = test[0]
    # CUB "1.5 2.5 10 12" (x y w h) -> xyxy with x2 = x + w, no -1
    assert sample.boxes.tolist() == [[1.5, 2.5, 11.5, 14.5]]
    assert sample.image_id == 2 and sample.label == 0
    assert sample.name == "001.Red_bird/Red_bird_0002.jpg"
    assert sample.orig_size == (32, 32) and sample.to_orig == (1.0, 1.0, 0.0, 0.0)
    assert sample.image.shape == (3, 32, 32) and sample.image.dtype == torch.float32
    assert 0.0 <= float(sample.image.min()) and float(sample.image.max()) <= 1.0


def test_pixels_are_rgb_and_match_the_file(cub_tree: Path, cub_spec: dict) -> None:
    CUB_IMAGES = cub_spec["images"]
    sample = build_dataset("cub", cub_tree, "train")[1]
    bgr = cv2.imread(str(cub_tree / "images" / CUB_IMAGES[2][2]))
    expected = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float() / 255.0
    assert torch.equal(sample.image, expected)


def test_soft_masks_threshold_and_la_mode(cub_tree: Path, cub_spec: dict) -> None:
    CUB_IMAGES, soft_mask = cub_spec["images"], cub_spec["soft_mask"]
    ds = build_dataset("cub", cub_tree, "train")
    for sample, (_, _, _, _, (w, h), box) in zip([ds[0], ds[1]], [CUB_IMAGES[0], CUB_IMAGES[2]]):
        expected = soft_mask(w, h, box) > 127  # the 100-valued ring is below 0.5 and must be background
        assert sample.mask is not None and sample.mask.dtype == torch.bool
        assert np.array_equal(sample.mask.numpy(), expected)
    # image 1's PNG is 'LA' with alpha 0 on the object: reading alpha instead of L would give an empty mask
    assert int(ds[0].mask.sum()) == 20 * 10


def test_collate_batches_masks_and_boxes(cub_tree: Path) -> None:
    ds = build_dataset("cub", cub_tree, "test")
    batch = collate([ds[1], ds[1]])
    assert batch.masks is not None and batch.masks.shape == (2, 36, 24)
    assert batch.image_ids.tolist() == [4, 4]


def test_parent_folder_and_segmentations_beside_it(cub_tree: Path, tmp_path: Path) -> None:
    shutil.move(str(cub_tree / "segmentations"), str(tmp_path / "segmentations"))
    ds = build_dataset("cub", tmp_path, "test")  # the folder holding CUB_200_2011/
    assert len(ds) == 3 and ds.has_masks
    assert ds[0].mask is not None
    no_masks = build_dataset("cub", cub_tree, "test", masks=False)
    assert not no_masks.has_masks and no_masks[0].mask is None


def test_without_segmentations_has_no_masks(cub_tree: Path) -> None:
    shutil.rmtree(cub_tree / "segmentations")
    ds = build_dataset("cub", cub_tree, "train")
    assert not ds.has_masks and ds[0].mask is None


@pytest.mark.parametrize(
    "file, text, line",
    [
        ("bounding_boxes.txt", "1 5 6 20 10\n2 1.5 2.5 10 12\n3 10 8 30\n4 0 0 24 36\n5 3 4 5 6\n", 3),
        ("bounding_boxes.txt", "1 5 6 20 10\n2 1.5 2.5 ten 12\n3 10 8 30 20\n4 0 0 24 36\n5 3 4 5 6\n", 2),
        ("image_class_labels.txt", "1 1\n2 1\n3 2\n4 3\n5 2\n", 4),
        ("train_test_split.txt", "1 1\n2 0\n3 2\n4 0\n5 0\n", 3),
        ("images.txt", "1 001.Red_bird/Red_bird_0001.jpg\n1 001.Red_bird/Red_bird_0002.jpg\n", 2),
        ("classes.txt", "1 001.Red_bird\n3 002.Blue_bird\n", 2),
    ],
)
def test_malformed_line_names_file_and_line(cub_tree: Path, file: str, text: str, line: int) -> None:
    (cub_tree / file).write_text(text)
    with pytest.raises(DataError, match=rf"{file}, line {line}\b"):
        build_dataset("cub", cub_tree, "train")


def test_missing_box_line_and_missing_file(cub_tree: Path) -> None:
    (cub_tree / "bounding_boxes.txt").write_text("1 5 6 20 10\n2 1.5 2.5 10 12\n3 10 8 30 20\n4 0 0 24 36\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt: no bounding box line for image_id 5 \(images.txt line 5\)"):
        build_dataset("cub", cub_tree, "test")
    (cub_tree / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt"):
        build_dataset("cub", cub_tree, "test")


def test_missing_image_names_file_and_images_txt_line(cub_tree: Path, cub_spec: dict) -> None:
    CUB_IMAGES = cub_spec["images"]
    (cub_tree / "images" / CUB_IMAGES[3][2]).unlink()
    with pytest.raises(DataError, match=r"Blue_bird_0004.jpg \(images.txt line 4\) not found"):
        build_dataset("cub", cub_tree, "test")
    assert len(build_dataset("cub", cub_tree, "train")) == 2  # other split unaffected


def test_skip_corrupt_lists_reasons(cub_tree: Path, cub_spec: dict) -> None:
    CUB_IMAGES = cub_spec["images"]
    (cub_tree / "images" / CUB_IMAGES[3][2]).write_bytes(b"not an image at all")
    strict = build_dataset("cub", cub_tree, "test", masks=False)
    with pytest.raises(DataError, match="cannot decode"):
        strict[1]
    (cub_tree / "images" / CUB_IMAGES[4][2]).unlink()
    ds = build_dataset("cub", cub_tree, "test", skip_corrupt=True)
    assert [r.image_id for r in ds.records] == [2]
    assert len(ds.skipped) == 2
    assert any("Blue_bird_0004.jpg" in s and "cannot decode" in s for s in ds.skipped)
    assert any("Blue_bird_0005.jpg" in s and "missing" in s for s in ds.skipped)


def test_truncated_jpeg_is_corrupt(cub_tree: Path, cub_spec: dict) -> None:
    CUB_IMAGES = cub_spec["images"]
    path = cub_tree / "images" / CUB_IMAGES[1][2]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    ds = build_dataset("cub", cub_tree, "test", skip_corrupt=True)
    assert any("truncated" in s for s in ds.skipped)


def test_mask_size_mismatch_and_bad_split(cub_tree: Path, cub_spec: dict) -> None:
    CUB_IMAGES = cub_spec["images"]
    seg = cub_tree / "segmentations" / Path(CUB_IMAGES[1][2]).with_suffix(".png")
    cv2.imwrite(str(seg), np.zeros((5, 5), np.uint8))
    ds = build_dataset("cub", cub_tree, "test")
    with pytest.raises(DataError, match="Red_bird_0002.png is 5x5"):
        ds[0]
    with pytest.raises(DataError, match="split 'val'"):
        build_dataset("cub", cub_tree, "val")


def test_path_options_relative_to_the_root(cub_tree: Path, monkeypatch, tmp_path: Path) -> None:
    """segmentations= given relative to the dataset root works from any working folder, as coco's options do."""
    (cub_tree / "segmentations").rename(cub_tree / "masks_v2")
    monkeypatch.chdir(tmp_path)
    ds = build_dataset("cub", cub_tree, "test", segmentations=Path("masks_v2"))
    assert ds.has_masks and ds[0].mask is not None
