"""The wsolevaluation-metadata loader on a tiny tree (CUB-style boxes and OpenImages-style masks)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from wsol.data import build_dataset
from wsol.errors import DataError

# (path, label, (w, h), boxes x0 y0 x1 y1)
SPLITS: Dict[str, List[tuple]] = {
    "train": [
        ("001.Gull/Gull_1.jpg", 0, (30, 20), [(1, 2, 11, 12)]),
        ("002.Tern/Tern_1.jpg", 1, (25, 25), [(0, 0, 25, 25)]),
    ],
    "val": [("001.Gull/Gull_v.jpg", 0, (20, 20), [(2, 2, 8, 8)])],
    "test": [
        ("002.Tern/Tern_2.jpg", 1, (40, 30), [(3, 4, 13, 14), (20, 5, 39, 29)]),
        ("001.Gull/Gull_2.jpg", 0, (16, 18), [(0.5, 1.5, 10.25, 17)]),
        ("003.Auk/Auk_1.jpg", 2, (22, 22), []),
    ],
}


def _write_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, rows in SPLITS.items():
        folder = root / "metadata" / split
        folder.mkdir(parents=True)
        ids, labels, sizes, loc = [], [], [], []
        for path, label, (w, h), boxes in rows:
            image = root / path
            image.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            ids.append(path)
            labels.append(f"{path},{label}")
            sizes.append(f"{path},{w},{h}")
            loc += [f"{path},{x0},{y0},{x1},{y1}" for x0, y0, x1, y1 in boxes]
        for name, lines in (("image_ids", ids), ("class_labels", labels), ("image_sizes", sizes), ("localization", loc)):
            (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _write_tree(tmp_path / "CUB")


def test_labels_boxes_ids_and_class_names(tree: Path) -> None:
    test = build_dataset("wsolmeta", tree, "test")
    assert len(test) == 3 and test.labels == [1, 0, 2]
    assert [r.image_id for r in test.records] == [1, 2, 3]  # line order + 1
    assert test.class_names == ["Gull", "Tern", "Auk"] and test.num_classes == 3
    assert test.native_size == 224 and not test.has_masks
    first = test[0]
    assert first.boxes.tolist() == [[3, 4, 13, 14], [20, 5, 39, 29]]
    assert first.name == "002.Tern/Tern_2.jpg" and first.orig_size == (30, 40) and first.mask is None
    assert test[1].boxes.tolist() == [[0.5, 1.5, 10.25, 17.0]]
    assert test[2].boxes.shape == (0, 4)
    val = build_dataset("wsolmeta", tree, "val")
    assert len(val) == 1 and val[0].image_id == 1
    # class names come from all splits, so a split missing a class still knows all three
    assert build_dataset("wsolmeta", tree, "train").num_classes == 3


def test_explicit_metadata_folder(tree: Path, tmp_path: Path) -> None:
    (tree / "metadata").rename(tmp_path / "meta_cub")
    with pytest.raises(DataError, match="metadata folder"):
        build_dataset("wsolmeta", tree, "test")
    ds = build_dataset("wsolmeta", tree, "test", metadata=tmp_path / "meta_cub")
    assert len(ds) == 3


@pytest.mark.parametrize(
    "file, text, line, message",
    [
        ("localization.txt", "002.Tern/Tern_2.jpg,3,4,13,14\n002.Tern/Tern_2.jpg,20,5,39\n", 2, "expected"),
        ("localization.txt", "002.Tern/Tern_2.jpg,3,4,13,14\n001.Gull/Gull_2.jpg,5,5,1,9\n", 2, "x0 <= x1"),
        ("localization.txt", "002.Tern/nope.jpg,3,4,13,14\n", 1, "not listed"),
        ("class_labels.txt", "002.Tern/Tern_2.jpg,1\n001.Gull/Gull_2.jpg,zero\n003.Auk/Auk_1.jpg,2\n", 2, "integer"),
        ("class_labels.txt", "002.Tern/Tern_2.jpg,1\n002.Tern/Tern_2.jpg,1\n", 2, "second label"),
        ("image_ids.txt", "002.Tern/Tern_2.jpg\n001.Gull/Gull_2.jpg\n002.Tern/Tern_2.jpg\n", 3, "listed twice"),
        ("image_sizes.txt", "002.Tern/Tern_2.jpg,40\n", 1, "expected"),
    ],
)
def test_malformed_line_names_file_and_line(tree: Path, file: str, text: str, line: int, message: str) -> None:
    (tree / "metadata" / "test" / file).write_text(text)
    with pytest.raises(DataError, match=rf"{file}, line {line}: .*{message}"):
        build_dataset("wsolmeta", tree, "test")


def test_missing_label(tree: Path) -> None:
    (tree / "metadata" / "test" / "class_labels.txt").write_text("002.Tern/Tern_2.jpg,1\n001.Gull/Gull_2.jpg,0\n")
    with pytest.raises(DataError, match=r"no label for 003.Auk/Auk_1.jpg \(image_ids.txt line 3\)"):
        build_dataset("wsolmeta", tree, "test")


def test_label_outside_num_classes(tree: Path) -> None:
    with pytest.raises(DataError, match=r"class_labels.txt, line 3: label 2 is outside 0..1"):
        build_dataset("wsolmeta", tree, "test", num_classes=2)


def test_missing_image_and_skip_corrupt(tree: Path) -> None:
    (tree / "003.Auk" / "Auk_1.jpg").unlink()
    with pytest.raises(DataError, match=r"Auk_1.jpg \(image_ids.txt line 3\) not found"):
        build_dataset("wsolmeta", tree, "test")
    skipping = build_dataset("wsolmeta", tree, "test", skip_corrupt=True)
    assert len(skipping) == 2 and "missing" in skipping.skipped[0]


def test_image_size_mismatch(tree: Path) -> None:
    (tree / "metadata" / "test" / "image_sizes.txt").write_text("002.Tern/Tern_2.jpg,41,30\n")
    ds = build_dataset("wsolmeta", tree, "test")
    with pytest.raises(DataError, match="image_sizes.txt says 41x30"):
        ds[0]
    assert ds[1].orig_size == (18, 16)  # no size line for it: nothing to check


def test_openimages_style_masks_are_unioned(tree: Path) -> None:
    h, w = 30, 40
    a = np.zeros((h, w), np.uint8)
    a[2:10, 3:12] = 255
    b = np.zeros((h, w), np.uint8)
    b[15:25, 20:30] = 200
    b[0:2, 0:2] = 90  # soft value below 0.5: background
    ignore = np.zeros((h, w), np.uint8)
    ignore[:, 35:] = 255
    for name, arr in (("m/a.png", a), ("m/b.png", b), ("m/ignore.png", ignore)):
        (tree / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tree / name), arr)
    loc = tree / "metadata" / "test" / "localization.txt"
    loc.write_text("002.Tern/Tern_2.jpg,m/a.png,m/ignore.png\n002.Tern/Tern_2.jpg,m/b.png,\n001.Gull/Gull_2.jpg,0,0,4,4\n")
    ds = build_dataset("wsolmeta", tree, "test")
    assert ds.has_masks
    mask = ds[0].mask.numpy()
    assert np.array_equal(mask, (a > 127) | (b > 127))
    assert ds[1].mask is not None and not ds[1].mask.any()  # no mask lines: all background
    assert ds.load_ignore(0).sum() == h * 5
    assert ds.load_ignore(1) is None


def test_unknown_split(tree: Path) -> None:
    with pytest.raises(DataError, match="split 'extra'"):
        build_dataset("wsolmeta", tree, "extra")


def test_metadata_and_mask_root_relative_to_the_root(tree: Path, monkeypatch, tmp_path: Path) -> None:
    """metadata= and mask_root= given relative to the dataset root work from any working folder, as coco's options do."""
    (tree / "metadata").rename(tree / "meta_v2")
    monkeypatch.chdir(tmp_path)
    assert len(build_dataset("wsolmeta", tree, "test", metadata=Path("meta_v2"), mask_root=Path("."))) == 3
