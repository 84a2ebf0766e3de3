"""The bring-your-own COCO-instances loader: labels, xywh boxes, polygon and RLE masks, errors."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wsol.data import build_dataset
from wsol.errors import DataError

H, W = 20, 30


def _rle_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[12:18, 2:9] = 1
    mask[14, 20:25] = 1
    return mask


def _coco(root: Path, images_dir: str = "images") -> dict:
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        path = root / images_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    compressed = mask_utils.encode(np.asfortranarray(_rle_mask()))
    compressed["counts"] = compressed["counts"].decode("ascii")
    return {
        "info": {},
        "images": [
            {"id": 11, "file_name": "a.jpg", "height": H, "width": W},
            {"id": 7, "file_name": "b.jpg", "height": H, "width": W},
            {"id": 30, "file_name": "c.jpg", "height": H, "width": W},
        ],
        "categories": [{"id": 9, "name": "zebra"}, {"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}],
        "annotations": [
            # image 11: a small cat (polygon) and a larger dog (compressed RLE) -> label dog
            {"id": 1, "image_id": 11, "category_id": 2, "bbox": [1, 1, 4, 3], "area": 12.0, "iscrowd": 0,
             "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            {"id": 2, "image_id": 11, "category_id": 5, "bbox": [2, 12, 23, 6], "area": 43.0, "iscrowd": 0,
             "segmentation": compressed},
            # image 7: zebra without area/segmentation; a crowd cat that is bigger but crowd -> zebra
            {"id": 3, "image_id": 7, "category_id": 9, "bbox": [0.5, 0.5, 10, 10], "iscrowd": 0},
            {"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 30, 20], "area": 600.0, "iscrowd": 1},
        ],
    }


def _write(root: Path, data: dict, name: str = "annotations/instances_train.json") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _write(tmp_path, _coco(tmp_path))
    return tmp_path


def test_labels_boxes_ids_and_skipped(tree: Path) -> None:
    ds = build_dataset("coco", tree, "train")
    assert ds.class_names == ["cat", "dog", "zebra"]  # sorted category ids 2, 5, 9
    assert [r.image_id for r in ds.records] == [11, 7]
    assert ds.labels == [1, 2]
    assert ds.skipped == ["c.jpg: no annotations"]
    assert ds.has_masks and ds.native_size == 224 and ds.num_classes == 3
    first = ds[0]
    assert first.boxes.tolist() == [[1, 1, 5, 4], [2, 12, 25, 18]]  # x y w h -> x y x+w y+h
    assert first.image_id == 11 and first.name == "a.jpg" and first.orig_size == (H, W)
    assert ds[1].boxes.tolist() == [[0.5, 0.5, 10.5, 10.5], [0, 0, 30, 20]]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mask_is_union_of_polygon_and_rle(tree: Path) -> None:
    ds = build_dataset("coco", tree, "train")
    mask = ds[0].mask.numpy()
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[1, 1, 5, 1, 5, 4, 1, 4]], H, W))).astype(bool)
    assert poly[1:4, 1:5].all() and poly.sum() <= 5 * 4  # the oracle polygon covers the 4x3 rectangle
    assert np.array_equal(mask, poly | _rle_mask().astype(bool))
    assert not ds[1].mask.any()  # annotations without segmentation: empty mask, still a mask


def test_uncompressed_rle(tmp_path: Path) -> None:
    data = _coco(tmp_path)
    fortran = np.asfortranarray(_rle_mask())
    flat = fortran.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    data["annotations"][1]["segmentation"] = {"size": [H, W], "counts": counts}
    data["annotations"][0].pop("segmentation")
    _write(tmp_path, data, "annotations.json")
    ds = build_dataset("coco", tmp_path, "test")  # annotations.json serves any split
    assert np.array_equal(ds[0].mask.numpy(), _rle_mask().astype(bool))


def test_images_next_to_root_and_explicit_paths(tmp_path: Path) -> None:
    data = _coco(tmp_path, images_dir="pics")
    path = _write(tmp_path, data, "labels/my.json")
    with pytest.raises(DataError, match="no COCO annotations for split 'train'"):
        build_dataset("coco", tmp_path, "train")
    ds = build_dataset("coco", tmp_path, "train", annotations=path, images="pics")
    assert len(ds) == 2 and ds[0].image.shape == (3, H, W)
    assert len(build_dataset("coco", tmp_path, "train", annotations="labels/my.json", images=tmp_path / "pics")) == 2
    with pytest.raises(DataError, match=rf"^annotations file {tmp_path / 'labels/no.json'} not found$"):
        build_dataset("coco", tmp_path, "train", annotations="labels/no.json")
    with pytest.raises(DataError, match=rf"^image folder {tmp_path / 'nope'} not found$"):
        build_dataset("coco", tmp_path, "train", annotations="labels/my.json", images="nope")
    data["images"][0]["file_name"] = "pics/a.jpg"
    data["images"][1]["file_name"] = "pics/b.jpg"
    data["images"][2]["file_name"] = "pics/c.jpg"
    _write(tmp_path, data, "instances_val.json")
    assert len(build_dataset("coco", tmp_path, "val")) == 2  # file_name relative to root


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"][1].pop("bbox"), r"annotations\[1\] lacks 'bbox'"),
        (lambda d: d["annotations"][0].update(category_id=4), r"annotations\[0\] has category_id 4"),
        (lambda d: d["annotations"][2].update(image_id=99), r"annotations\[2\] has image_id 99"),
        (lambda d: d["annotations"][3].update(bbox=[0, 0, -1, 2]), r"annotations\[3\].bbox"),
        (lambda d: d.pop("categories"), "missing list 'categories'"),
        (lambda d: d["images"][1].pop("file_name"), r"images\[1\] lacks 'file_name'"),
    ],
)
def test_malformed_json_names_file_and_entry(tmp_path: Path, edit, message: str) -> None:
    data = _coco(tmp_path)
    edit(data)
    _write(tmp_path, data)
    with pytest.raises(DataError, match=rf"instances_train.json: .*{message}"):
        build_dataset("coco", tmp_path, "train")


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "annotations.json"
    path.write_text('{\n  "images": [],\n  oops\n}')
    with pytest.raises(DataError, match=r"annotations.json, line 3: invalid JSON"):
        build_dataset("coco", tmp_path, "train")


def test_missing_and_corrupt_images(tree: Path) -> None:
    (tree / "images" / "b.jpg").write_bytes(b"garbage")
    (tree / "images" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"a.jpg \(image id 11 in .*instances_train.json\) not found"):
        build_dataset("coco", tree, "train")
    ds = build_dataset("coco", tree, "train", skip_corrupt=True)
    assert len(ds) == 0
    assert sorted(ds.skipped) == ["a.jpg: missing", "b.jpg: cannot decode", "c.jpg: no annotations"]
