"""Oxford Flowers-17 (jpg/, datasplits.mat, trimaps/) and Flowers-102 (jpg/, *.mat, segmim/) trees."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from wsol.data import build_dataset, collate
from wsol.data.base import mask_to_box
from wsol.data.flowers import balance_indices, inspect_trimap
from wsol.errors import ConfigError, DataError

W, H = 16, 12
SPLITS17 = {
    "trn1": [1, 2, 81, 82], "val1": [3], "tst1": [161],
    "trn2": [83], "val2": [4], "tst2": [162],
    "trn3": [5], "val3": [6], "tst3": [163],
}


def _colour(i: int):
    return (i * 7 % 256, 255 - i % 256, (i * 13 + 40) % 256)


def _jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])


def _uniform(i: int, w: int = W, h: int = H) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:] = _colour(i)
    return img


def _mat(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {k: np.asarray(v, dtype=np.float64).reshape(1, -1) for k, v in content.items()})


def make_flowers17(root: Path) -> None:
    for i in sorted({i for v in SPLITS17.values() for i in v}):
        _jpg(root / "jpg" / f"image_{i:04d}.jpg", _uniform(i))
    _mat(root / "datasplits.mat", SPLITS17)
    _mat(root / "trimaps" / "imlist.mat", {"imlist": [1, 81, 161]})
    # image 1: palette PNG; index 0 background, 2 boundary band, 1 flower (rows 2..7, cols 3..9).
    idx = np.zeros((H, W), dtype=np.uint8)
    idx[1:9, 2:11] = 2
    idx[2:8, 3:10] = 1
    im = Image.fromarray(idx)
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
    assert im.mode == "P"
    im.save(root / "trimaps" / "image_0001.png")
    # image 81: true-colour PNG; black background, grey boundary, red flower (rows 4..6, cols 5..7).
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[3:8, 4:9] = (128, 128, 128)
    rgb[4:7, 5:8] = (255, 0, 0)
    assert cv2.imwrite(str(root / "trimaps" / "image_0081.png"), np.ascontiguousarray(rgb[..., ::-1]))
    # image 161: single-channel PNG holding codes (flower = 1 at rows 0..2, cols 0..3).
    grey = np.full((H, W), 2, dtype=np.uint8)
    grey[0:3, 0:4] = 1
    grey[8:, 8:] = 0
    assert cv2.imwrite(str(root / "trimaps" / "image_0161.png"), grey)


def test_flowers17_splits_labels_pixels(tmp_path):
    make_flowers17(tmp_path)
    ds = build_dataset("flowers17", tmp_path, "train")
    assert [r.image_id for r in ds.records] == [1, 2, 81, 82]
    assert ds.labels == [0, 0, 1, 1]
    assert ds.num_classes == 17 and ds.class_names[0] == "daffodil" and ds.class_names[16] == "pansy"
    assert ds.native_size == 128 and ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    assert ds.has_masks is False  # images 2 and 82 have no trimap
    s = ds[1]
    assert s.name == "jpg/image_0002.jpg" and s.image_id == 2 and s.label == 0
    assert s.image.shape == (3, H, W) and s.orig_size == (H, W)
    assert torch.allclose(s.image[:, 5, 5] * 255, torch.tensor(_colour(2), dtype=torch.float32), atol=3)
    assert s.mask is None and s.boxes.shape == (0, 4)
    assert build_dataset("flowers17", tmp_path, "val").labels == [0]
    assert ds.has_boxes is True  # image 1's trimap gives it a box, though the split is not all masked
    assert ds.has_some_masks is True and build_dataset("flowers17", tmp_path, "val").has_some_masks is False
    partial = collate([ds[0], s])  # a mask and none: the batch keeps the mask and says which row is ground truth
    assert partial.masked.tolist() == [True, False] and partial.masks.shape == (2, H, W)
    assert torch.equal(partial.masks[0], ds[0].mask) and not partial.masks[1].any()
    assert build_dataset("flowers17", tmp_path, "val").has_boxes is False  # image 3: no trimap, no box
    assert [r.image_id for r in build_dataset("flowers17", tmp_path, "test", fold=2).records] == [162]
    assert build_dataset("flowers17", tmp_path, "test", fold=3).labels == [2]
    assert [r.image_id for r in build_dataset("flowers17", tmp_path, "trainval").records] == [1, 2, 81, 82, 3]


def test_flowers17_trimap_masks_and_boxes(tmp_path):
    make_flowers17(tmp_path)
    ds = build_dataset("flowers17", tmp_path, "train")
    s = ds[0]
    expected = np.zeros((H, W), dtype=bool)
    expected[2:8, 3:10] = True  # index 1 only: boundary (2) and background (0) are excluded
    assert s.mask is not None and s.mask.dtype == torch.bool
    assert np.array_equal(s.mask.numpy(), expected)
    assert s.boxes.tolist() == [[3.0, 2.0, 10.0, 8.0]]
    with pytest.raises(DataError, match=r"image_0081.png.*colour"):
        ds[2]  # the default index rule cannot read a true-colour trimap
    both = build_dataset("flowers17", tmp_path, "train", segmented_only=True, trimap_foreground=[1, "#ff0000"])
    assert [r.image_id for r in both.records] == [1, 81] and both.has_masks is True
    red = both[1]
    assert red.boxes.tolist() == [[5.0, 4.0, 8.0, 7.0]] and int(red.mask.sum()) == 9
    batch = collate([both[0], red])
    assert batch.masks.shape == (2, H, W) and batch.image_ids.tolist() == [1, 81] and batch.labels.tolist() == [0, 1]
    by_palette_colour = build_dataset("flowers17", tmp_path, "train", segmented_only=True, trimap_foreground="#800000")
    assert np.array_equal(by_palette_colour[0].mask.numpy(), expected)
    grey = build_dataset("flowers17", tmp_path, "test", segmented_only=True)[0]
    assert grey.image_id == 161 and grey.boxes.tolist() == [[0.0, 0.0, 4.0, 3.0]]
    boundary = build_dataset("flowers17", tmp_path, "test", segmented_only=True, trimap_foreground=[1, 2])[0]
    assert int(boundary.mask.sum()) == H * W - 32


def test_verify_says_a_split_is_partly_masked(tmp_path):
    from wsol.data.verify import format_report, verify_dataset

    make_flowers17(tmp_path)
    report = verify_dataset("flowers17", tmp_path, ["train", "val"])
    rows = {line.split()[0]: line.split() for line in format_report(report).splitlines()[3:5]}
    assert rows["train"][5] == "some" and rows["val"][5] == "no"  # train read 'no' though two of its four images have a trimap


def test_flowers17_inspect_and_balance(tmp_path):
    make_flowers17(tmp_path)
    info = inspect_trimap(tmp_path / "trimaps" / "image_0001.png")
    assert info["kind"] == "palette"
    assert info["codes"][1] == {"pixels": 42, "colour": "#800000"}
    assert info["codes"][2]["pixels"] == 8 * 9 - 42
    rgb_info = inspect_trimap(tmp_path / "trimaps" / "image_0081.png")
    assert rgb_info["kind"] == "rgb" and rgb_info["colours"]["#ff0000"] == 9
    ds = build_dataset("flowers17", tmp_path, "train", balance_to=5)
    assert ds.labels == [0] * 5 + [1] * 5
    assert [r.image_id for r in ds.records] == [1, 2, 1, 2, 1, 81, 82, 81, 82, 81]
    assert balance_indices([2, 0, 2], 2) == [1, 1, 0, 2]
    with pytest.raises(ConfigError):
        balance_indices([0, 0, 0], 2)
    assert mask_to_box(np.zeros((3, 3), bool)).shape == (0, 4)


def test_flowers17_errors(tmp_path):
    make_flowers17(tmp_path)
    with pytest.raises(ConfigError, match="fold"):
        build_dataset("flowers17", tmp_path, "train", fold=4)
    with pytest.raises(DataError, match="split 'everything'"):
        build_dataset("flowers17", tmp_path, "everything")
    with pytest.raises(ConfigError, match="trimap_foreground"):
        build_dataset("flowers17", tmp_path, "train", trimap_foreground="#zz0000")
    (tmp_path / "jpg" / "image_0082.jpg").unlink()
    with pytest.raises(DataError, match="image_0082.jpg"):
        build_dataset("flowers17", tmp_path, "train")
    (tmp_path / "jpg" / "image_0082.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = build_dataset("flowers17", tmp_path, "train", skip_corrupt=True)
    assert [r.image_id for r in ds.records] == [1, 2, 81]
    assert ds.skipped == ["jpg/image_0082.jpg: truncated JPEG (no end-of-image marker)"]
    (tmp_path / "trimaps" / "image_0081.png").write_bytes(b"")
    ds = build_dataset("flowers17", tmp_path, "train", skip_corrupt=True)
    assert [r.image_id for r in ds.records] == [1, 2]
    assert ds.skipped[0] == "jpg/image_0081.jpg: mask image_0081.png: empty file"
    (tmp_path / "trimaps" / "image_0161.png").unlink()
    with pytest.raises(DataError, match="image_0161.png"):
        build_dataset("flowers17", tmp_path, "test")
    cv2.imwrite(str(tmp_path / "trimaps" / "image_0161.png"), np.ones((H + 1, W), np.uint8))
    with pytest.raises(DataError, match=r"image_0161.png.*16x13"):
        build_dataset("flowers17", tmp_path, "test")[0]
    (tmp_path / "trimaps" / "imlist.mat").unlink()
    with pytest.raises(DataError, match="imlist.mat"):
        build_dataset("flowers17", tmp_path, "test")
    _mat(tmp_path / "datasplits.mat", {**SPLITS17, "tst1": [161, 1361]})
    with pytest.raises(DataError, match=r"datasplits.mat.*'tst1'.*1361"):
        build_dataset("flowers17", tmp_path, "test")
    _mat(tmp_path / "datasplits.mat", {k: v for k, v in SPLITS17.items() if k != "val2"})
    with pytest.raises(DataError, match=r"datasplits.mat.*'val2'"):
        build_dataset("flowers17", tmp_path, "val", fold=2)
    (tmp_path / "datasplits.mat").unlink()
    with pytest.raises(DataError, match="datasplits.mat"):
        build_dataset("flowers17", tmp_path, "train")


BLUE = (0, 0, 254)
SEG = (8, 24, 10, 30)  # flower rows 8..23, cols 10..29 in a 40×48 segmim


def make_flowers102(root: Path) -> None:
    for i in range(1, 6):
        _jpg(root / "jpg" / f"image_{i:05d}.jpg", _uniform(i, 48, 40))
    _mat(root / "imagelabels.mat", {"labels": [1, 2, 102, 1, 5]})
    _mat(root / "setid.mat", {"trnid": [1, 3], "valid": [2], "tstid": [4, 5]})
    for i in range(1, 5):
        seg = np.zeros((40, 48, 3), dtype=np.uint8)
        seg[:] = BLUE
        seg[SEG[0]:SEG[1], SEG[2]:SEG[3]] = (240, 220, 30)
        _jpg(root / "segmim" / f"segmim_{i:05d}.jpg", seg)


def test_flowers102(tmp_path):
    make_flowers102(tmp_path)
    train = build_dataset("flowers102", tmp_path, "train")
    assert train.labels == [0, 101] and [r.image_id for r in train.records] == [1, 3]
    assert train.num_classes == 102 and train.class_names[0] == "pink primrose"
    assert train.native_size == 224 and train.mean == (0.485, 0.456, 0.406)
    assert train.has_masks is True
    s = train[0]
    assert s.name == "jpg/image_00001.jpg" and s.image_id == 1 and s.orig_size == (40, 48)
    assert torch.allclose(s.image[:, 20, 20] * 255, torch.tensor(_colour(1), dtype=torch.float32), atol=3)
    expected = np.zeros((40, 48), dtype=bool)
    expected[SEG[0]:SEG[1], SEG[2]:SEG[3]] = True
    mask = s.mask.numpy()
    # JPEG blurs the blue next to the flower: allow a rim of at most 2 px, never lose the flower.
    assert np.all(mask[expected])
    rim = cv2.dilate(expected.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not np.any(mask & ~rim)
    x1, y1, x2, y2 = s.boxes[0].tolist()
    assert abs(x1 - 10) <= 2 and abs(y1 - 8) <= 2 and abs(x2 - 30) <= 2 and abs(y2 - 24) <= 2
    assert build_dataset("flowers102", tmp_path, "val").labels == [1]
    test = build_dataset("flowers102", tmp_path, "test")
    assert test.labels == [0, 4] and test.has_masks is False and test.has_some_masks is True
    assert test[1].mask is None and test[1].boxes.shape == (0, 4) and test[0].mask is not None


def test_flowers102_errors(tmp_path):
    make_flowers102(tmp_path)
    with pytest.raises(DataError, match="split 'extra'"):
        build_dataset("flowers102", tmp_path, "extra")
    _mat(tmp_path / "setid.mat", {"trnid": [1, 6], "valid": [2], "tstid": [4]})
    with pytest.raises(DataError, match=r"setid.mat.*'trnid'.*6"):
        build_dataset("flowers102", tmp_path, "train")
    (tmp_path / "setid.mat").unlink()
    with pytest.raises(DataError, match="setid.mat"):
        build_dataset("flowers102", tmp_path, "train")
    _mat(tmp_path / "setid.mat", {"trnid": [1], "valid": [2], "tstid": [4]})
    _mat(tmp_path / "imagelabels.mat", {"labels": [1, 2, 103, 1, 5]})
    with pytest.raises(DataError, match=r"imagelabels.mat.*103"):
        build_dataset("flowers102", tmp_path, "train")
    _mat(tmp_path / "imagelabels.mat", {"labels": [1, 2, 3, 1, 5]})
    (tmp_path / "jpg" / "image_00001.jpg").unlink()
    with pytest.raises(DataError, match="image_00001.jpg"):
        build_dataset("flowers102", tmp_path, "train")
