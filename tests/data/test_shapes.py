"""The synthetic ``shapes`` set: deterministic bytes, CUB format, atomic writes, masks that match boxes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest

import wsol.data.shapes as shapes
from wsol.data import build_dataset
from wsol.data.shapes import default_shapes_root, ensure_shapes, synthesize_shapes
from wsol.errors import DataError

SMALL = dict(n_train=20, n_test=10, size=64, num_classes=5)


def _tree_bytes(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_shapes(tmp_path_factory.mktemp("shapes") / "s", seed=7, **SMALL)


def test_same_seed_same_bytes_other_seed_differs(small_tree: Path, tmp_path: Path) -> None:
    again = _tree_bytes(synthesize_shapes(tmp_path / "again", seed=7, **SMALL))
    first = _tree_bytes(small_tree)
    assert again == first
    other = _tree_bytes(synthesize_shapes(tmp_path / "other", seed=8, **SMALL))
    assert other.keys() == first.keys()
    differing = [k for k in first if k.endswith(".png") and first[k] != other[k]]
    assert len(differing) > 50


def test_cub_format_files(small_tree: Path) -> None:
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt"):
        assert (small_tree / name).is_file()
    lines = (small_tree / "images.txt").read_text().splitlines()
    assert len(lines) == 30 and lines[0] == "1 001.disc/disc_00001.png"
    assert (small_tree / "classes.txt").read_text().splitlines()[:2] == ["1 001.disc", "2 002.square"]
    splits = [line.split()[1] for line in (small_tree / "train_test_split.txt").read_text().splitlines()]
    assert splits.count("1") == 20 and splits.count("0") == 10
    for line in lines:
        rel = line.split()[1]
        assert (small_tree / "segmentations" / rel).is_file()


def test_cub_loader_reads_it_with_boxes_tight_around_masks(small_tree: Path) -> None:
    for loader in ("cub", "shapes"):
        train = build_dataset(loader, small_tree, "train")
        test = build_dataset(loader, small_tree, "test")
        assert len(train) == 20 and len(test) == 10 and train.has_masks
        assert sorted(np.bincount(train.labels).tolist()) == [4] * 5
        assert train.class_names == ["disc", "square", "triangle", "plus", "ring"]
    assert train.native_size == 64
    meta = json.loads((small_tree / "shapes.json").read_text())
    assert train.mean == tuple(meta["mean"]) and train.std == tuple(meta["std"])
    assert build_dataset("cub", small_tree, "train").native_size == 224
    for sample in list(train) + list(test):
        mask = sample.mask.numpy()
        ys, xs = np.nonzero(mask)
        tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert sample.boxes.tolist() == [[float(v) for v in tight]]
        x0, y0, x1, y1 = (int(v) for v in tight)
        # the object is a blob that fills a good part of its box and of the frame
        assert mask[y0:y1, x0:x1].mean() > 0.5
        assert mask.mean() > 0.02
        assert sample.image.shape == (3, 64, 64)


def test_pixels_match_png_files(small_tree: Path) -> None:
    ds = build_dataset("shapes", small_tree, "test")
    sample = ds[3]
    bgr = cv2.imread(str(small_tree / "images" / sample.name))
    assert np.array_equal((sample.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), bgr[..., ::-1])


def test_many_classes_and_other_size(tmp_path: Path) -> None:
    root = synthesize_shapes(tmp_path / "big", n_train=24, n_test=12, size=96, num_classes=12, seed=1)
    ds = build_dataset("shapes", root, "train")
    assert ds.num_classes == 12 and ds.native_size == 96
    assert ds.class_names[10:] == ["disc_dark", "square_dark"]
    assert ds[0].image.shape == (3, 96, 96)


def test_bad_parameters() -> None:
    with pytest.raises(DataError, match="num_classes"):
        synthesize_shapes(Path("/nonexistent/x"), num_classes=1)
    with pytest.raises(DataError, match="size"):
        synthesize_shapes(Path("/nonexistent/x"), size=8)


def test_refuses_foreign_folder_and_replaces_own_tree(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="not a shapes tree"):
        synthesize_shapes(foreign, seed=0, **SMALL)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    out = tmp_path / "s"
    synthesize_shapes(out, seed=1, **SMALL)
    synthesize_shapes(out, seed=2, n_train=10, n_test=5, num_classes=5)
    assert json.loads((out / "shapes.json").read_text())["seed"] == 2
    assert len((out / "images.txt").read_text().splitlines()) == 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "s"]


def test_crash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = shapes.render_shape

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(shapes, "render_shape", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        synthesize_shapes(tmp_path / "s", seed=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_tree_half_written_by_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # its pid no longer runs once it is waited for
    child.wait()
    killed_tmp, killed_old = tmp_path / f".s.{child.pid}.ab12.tmp", tmp_path / f".s.{child.pid}.cd34.old"
    (killed_tmp / "images").mkdir(parents=True)
    (killed_tmp / "images" / "half.png").write_bytes(b"\x89PNG")
    killed_old.mkdir()
    running = tmp_path / f".s.{os.getppid()}.ef56.tmp"  # another process still writing: left alone
    running.mkdir()
    synthesize_shapes(tmp_path / "s", seed=0, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s", running.name])


def test_ensure_shapes_reuses_checks_and_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = ensure_shapes(tmp_path / "user", seed=3, **SMALL)
    stamp = (root / "images.txt").stat().st_mtime_ns
    assert ensure_shapes(root, seed=3, **SMALL) == root
    assert (root / "images.txt").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match=r"seed=3 \(wanted 4\)"):
        ensure_shapes(root, seed=4, **SMALL)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_shapes_root() == tmp_path / "cache" / "wsol" / "shapes"
    cached = ensure_shapes(None, seed=3, **SMALL)
    assert cached == tmp_path / "cache" / "wsol" / "shapes"
    assert ensure_shapes(None, seed=5, **SMALL) == cached  # the cache is regenerated, not refused
    assert json.loads((cached / "shapes.json").read_text())["seed"] == 5


def test_shapes_loader_needs_shapes_json(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="wsol data synth shapes"):
        build_dataset("shapes", tmp_path / "empty", "train")


def test_generation_writes_one_image_folder_per_class(tmp_path: Path) -> None:
    synthesize_shapes(tmp_path / "s", n_train=200, n_test=50, seed=0)
    folders = sorted(os.listdir(tmp_path / "s" / "images"))
    assert len(folders) == 10 and sum(len(os.listdir(tmp_path / "s" / "images" / f)) for f in folders) == 250
