"""Kill-injection: SIGKILL just before each atomic replace of a training and a localization run (its batch
files included), then rerun (or --resume); the folder must end identical to an uninterrupted run's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from wsol.cli import run
from wsol.data.shapes import synthesize_shapes
from wsol.models import build_model, save_model
from wsol.utils.io import read_jsonl

TINY = """\
dataset: shapes
arch: small-cnn
epochs: 2
batch_size: 4
eval_batch_size: 8
max_train_batches: 2
optim:
  lr: 0.01
"""
TRAIN_REPLACES = 7  # config.yaml, then model.safetensors, model.json, train_state.pt per epoch
LOCALIZE_REPLACES = 4  # the two batch files of preds.json.partial, then preds.json, preds.meta.json
TIMING = ("time_s", "images_per_s")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("crash")
    root = synthesize_shapes(base / "shapes", n_train=8, n_test=8, size=32, num_classes=3, seed=0)
    config = base / "tiny.yaml"
    config.write_text(TINY)
    torch.manual_seed(0)
    checkpoint = save_model(build_model("small-cnn", 3, input_size=32), base / "model", dataset="shapes", method="natural")
    return {"base": base, "root": root, "config": config, "checkpoint": checkpoint}


def _train_argv(setup: Dict[str, Path], out: Path, *extra: str) -> List[str]:
    return ["train", "shapes", "--config", str(setup["config"]), "--root", str(setup["root"]), "--out", str(out), "--seed", "1", *extra]


def _localize_argv(setup: Dict[str, Path], out: Path, threshold: str = "0.2") -> List[str]:
    return ["localize", "--checkpoint", str(setup["checkpoint"]), "--dataset", "shapes", "--root", str(setup["root"]),
            "--out", str(out), "--threshold", threshold, "--batch-size", "4"]


def _killed_run(argv: List[str], k: int) -> int:
    """Run the CLI in a new process that SIGKILLs itself before its k-th replace; its return code.

    A fresh interpreter, not a fork: forking a process whose OpenMP threads have run can hang the child."""
    env = {**os.environ, "WSOL_TEST_KILL_BEFORE_REPLACE": str(k), "WSOL_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "wsol", *argv], env=env, capture_output=True, timeout=600).returncode


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _train_files(out: Path) -> Dict[str, Any]:
    metrics = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(out / "metrics.jsonl")]
    return {
        "names": sorted(p.name for p in out.iterdir()),
        "config": (out / "config.yaml").read_text(),
        "metrics": metrics,
        "model": (out / "model.safetensors").read_bytes(),
        "model_meta": (out / "model.json").read_text(),
        "state": torch.load(out / "train_state.pt", weights_only=True),
    }


def test_training_killed_before_any_replace_resumes_to_the_uninterrupted_files(setup, capsys) -> None:
    reference = setup["base"] / "train_ref"
    assert run(_train_argv(setup, reference)) == 0
    expected = _train_files(reference)
    for k in range(1, TRAIN_REPLACES + 1):
        out = setup["base"] / f"train_k{k}"
        assert _killed_run(_train_argv(setup, out), k) == -9, k
        assert run(_train_argv(setup, out, "--resume")) == 0, (k, capsys.readouterr().err)
        got = _train_files(out)
        for key in expected:
            assert _same(got[key], expected[key]), (k, key)
    assert _killed_run(_train_argv(setup, setup["base"] / "train_all"), TRAIN_REPLACES + 1) == 0


def test_localization_killed_before_any_replace_reruns_to_the_uninterrupted_files(setup, capsys) -> None:
    reference = setup["base"] / "loc_ref" / "preds.json"
    assert run(_localize_argv(setup, reference)) == 0
    expected = {p.name: p.read_bytes() for p in reference.parent.iterdir()}
    for k in range(1, LOCALIZE_REPLACES + 1):
        out = setup["base"] / f"loc_k{k}" / "preds.json"
        assert run(_localize_argv(setup, out, threshold="0.6")) == 0  # an earlier run with other settings
        assert _killed_run(_localize_argv(setup, out), k) == -9
        assert len(list((out.parent / "preds.json.partial").glob("batch-*.npz"))) == min(k - 1, 2)
        if k == LOCALIZE_REPLACES:  # new predictions beside the old meta: evaluate refuses the pair in one line
            capsys.readouterr()
            assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(setup["root"])]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and "does not belong to preds.json" in err and err.count("\n") == 1
        assert run(_localize_argv(setup, out)) == 0  # resumes from the batches on disk
        assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == expected, k
    assert _killed_run(_localize_argv(setup, setup["base"] / "loc_all" / "preds.json"), LOCALIZE_REPLACES + 1) == 0
    meta = json.loads(reference.with_suffix(".meta.json").read_text())
    assert meta["threshold"] == pytest.approx(0.2)
