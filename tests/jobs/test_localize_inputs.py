"""`wsol localize` inputs a new user gets wrong: a run folder for --checkpoint, a split with no images."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wsol.config import LocalizeConfig
from wsol.data import shapes as shapes_module
from wsol.errors import WsolError
from wsol.jobs.localize import run_localize
from wsol.models import build_model, save_model


@pytest.fixture(scope="module")
def tree_and_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("loc")
    root = shapes_module.synthesize_shapes(base / "tree", n_train=6, n_test=3, size=32, num_classes=2, seed=0)
    ckpt = save_model(build_model("small-cnn", 2, input_size=32), base / "run" / "model", dataset="shapes", method="natural")
    return Path(root), Path(ckpt)


def test_run_folder_as_checkpoint_names_the_model_file(tree_and_model, tmp_path) -> None:
    root, ckpt = tree_and_model
    with pytest.raises(WsolError, match=r"is a folder; pass the model file in it, e\.g\. .*run/model\.safetensors"):
        run_localize(ckpt.parent, "shapes", root, tmp_path / "p.json", LocalizeConfig())
    assert list(tmp_path.iterdir()) == []


def test_empty_split_writes_no_results(tree_and_model, tmp_path) -> None:
    root, ckpt = tree_and_model
    split = root.parent / "notest"
    shutil.copytree(root, split)
    path = split / "train_test_split.txt"
    path.write_text("".join(f"{line.split()[0]} 1\n" for line in path.read_text().splitlines()))
    with pytest.raises(WsolError, match="split 'test' of dataset shapes holds no images"):
        run_localize(ckpt, "shapes", split, tmp_path / "p.json", LocalizeConfig())
    assert list(tmp_path.iterdir()) == []


def test_cold_kernel_cache_is_detected(tmp_path) -> None:
    import os
    import subprocess
    import sys

    code = "from wsol.localize.fastboxes import kernels_cached; print(kernels_cached())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "empty"), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("cached", [True, False])
def test_first_compilation_is_announced(tree_and_model, tmp_path, monkeypatch, capsys, cached) -> None:
    import wsol.jobs.localize as job

    root, ckpt = tree_and_model
    monkeypatch.setattr(job, "kernels_cached", lambda: cached)
    run_localize(ckpt, "shapes", root, tmp_path / "p.json", LocalizeConfig())
    assert ("note: compiling the box-extraction kernels" in capsys.readouterr().err) is not cached


def test_compilation_note_never_precedes_an_input_error(tree_and_model, tmp_path, monkeypatch, capsys) -> None:
    import wsol.jobs.localize as job

    root, ckpt = tree_and_model
    broken = root.parent / "broken_box"
    shutil.copytree(root, broken)
    boxes = broken / "bounding_boxes.txt"
    boxes.write_text("".join(f"{line.split()[0]} 10 10 500 500\n" for line in boxes.read_text().splitlines()))
    monkeypatch.setattr(job, "kernels_cached", lambda: False)
    with pytest.raises(WsolError, match="outside"):
        run_localize(ckpt, "shapes", broken, tmp_path / "p.json", LocalizeConfig())
    assert "note: compiling" not in capsys.readouterr().err


def test_sweep_on_a_split_without_boxes_is_refused_before_the_pass(tmp_path, monkeypatch) -> None:
    import pickle

    import numpy as np

    import wsol.jobs.localize as job

    base = tmp_path / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    (base / "test_batch").write_bytes(pickle.dumps({b"labels": [0, 1], b"data": np.zeros((2, 3072), np.uint8)}))
    ckpt = save_model(build_model("small-cnn", 10, input_size=32), tmp_path / "run" / "model", dataset="cifar10", method="natural")
    monkeypatch.setattr(job, "localize_batches", lambda *a, **k: pytest.fail("the pass started"))
    out = tmp_path / "out" / "p.json"
    with pytest.raises(WsolError, match="--sweep needs ground-truth boxes, and split 'test' of dataset cifar10 has none"):
        run_localize(ckpt, "cifar10", tmp_path / "cifar", out, LocalizeConfig(sweep=True))
    assert not out.parent.exists()
