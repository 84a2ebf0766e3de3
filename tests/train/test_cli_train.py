"""`wsol train`: a tiny shapes run writes config.yaml, metrics.jsonl and a checkpoint; errors are one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsol.cli import run
from wsol.config import load_config
from wsol.data import shapes as shapes_module
from wsol.utils.io import read_jsonl

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = """\
dataset: shapes
arch: small-cnn
epochs: 1
batch_size: 4
eval_batch_size: 6
optim:
  lr: 0.01
art:
  steps: 1
eval:
  pgd:
    steps: 1
"""


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return shapes_module.synthesize_shapes(root / "tree", n_train=8, n_test=6, size=32, num_classes=3, seed=0)


def test_train_shapes_art_writes_run_folder(tmp_path, tiny_shapes, capsys) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    argv = ["train", "shapes", "--method", "art", "--config", str(config), "--root", str(tiny_shapes), "--out", str(out), "--set", "art.lam=0.25", "--seed", "3"]
    assert run(argv) == 0
    captured = capsys.readouterr()
    assert "checkpoint:" in captured.out
    resolved = load_config(out / "config.yaml")
    assert (resolved.method, resolved.art.lam, resolved.seed, resolved.root) == ("art", 0.25, 3, str(tiny_shapes))
    (record,) = read_jsonl(out / "metrics.jsonl")
    # the user reads percent, as in every report and the README; metrics.jsonl keeps fractions, and the output says so
    assert f"test/acc {100 * record['test/acc']:.2f} % of 6 test images" in captured.out
    assert f"test/pgd1_acc {100 * record['test/pgd1_acc']:.2f} %" in captured.out
    assert f"train/acc {100 * record['train/acc']:.2f} %" in captured.out
    assert "metrics.jsonl keeps one record per epoch, its accuracies as fractions of 1" in captured.out
    assert {"train/ce", "train/attr", "test/acc", "test/pgd1_acc"} <= set(record)
    meta = json.loads((out / "model.json").read_text())
    assert meta["method"] == "art" and meta["dataset"] == "shapes" and len(meta["class_names"]) == 3
    assert (out / "model.safetensors").is_file() and (out / "train_state.pt").is_file()
    # a second run into the same folder needs --resume; with it (and more epochs) it continues
    assert run(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert run(argv + ["--resume"]) == 0 and "has done its 1 epoch already" in capsys.readouterr().err  # not "1 epochs"
    assert run(argv + ["--resume", "--epochs", "2"]) == 0
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    capsys.readouterr()
    assert run(argv + ["--resume"]) == 0  # a finished run: its last record again, and a word that nothing was trained
    captured = capsys.readouterr()
    assert "has done its 2 epochs already; nothing to train" in captured.err and "epoch 2 (art)" in captured.out
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    (out / "metrics.jsonl").unlink()  # a finished run without its records: a line that says so, not a KeyError traceback
    assert run(argv + ["--resume"]) == 0
    assert "no epoch record to show: metrics.jsonl holds none" in capsys.readouterr().out


def test_shapes_root_defaults_to_generated_cache(tmp_path, tiny_shapes, monkeypatch, capsys) -> None:
    calls = []

    def fake_ensure(*args, **kwargs):
        calls.append(1)
        return tiny_shapes

    monkeypatch.setattr(shapes_module, "ensure_shapes", fake_ensure)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert run(["train", "shapes", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    assert calls and load_config(tmp_path / "run" / "config.yaml").method == "natural"


def test_user_errors_are_one_line(tmp_path, capsys) -> None:
    assert run(["train", "shapes", "--method", "magic", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "natural" in err and err.strip().count("\n") == 0
    assert run(["train", "cifar10", "--method", "art", "--out", str(tmp_path / "y")]) == 2
    assert "--root" in capsys.readouterr().err


def test_shapes_art_config_warms_up_naturally(tmp_path, tiny_shapes, capsys) -> None:
    config = load_config(CONFIGS / "shapes_small-cnn-bn_art.yaml")
    natural = load_config(CONFIGS / "shapes_small-cnn-bn_natural.yaml")
    assert config.weights is None and config.warmup_epochs == natural.epochs == config.epochs - 1
    assert (config.optim, config.schedule, config.seed, config.batch_size) == (natural.optim, natural.schedule, natural.seed, natural.batch_size)
    missing = tmp_path / "natural.safetensors"
    args = ["train", "shapes", "--method", "art", "--root", str(tiny_shapes), "--out", str(tmp_path / "a")]
    assert run([*args, "--warm-start", str(missing)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the "config: ..." line, one error line
    assert f"{missing} not found" in last and "--warm-start" in last
    assert not (tmp_path / "a" / "model.safetensors").exists()


def test_train_with_warmup_from_the_cli(tmp_path, tiny_shapes, capsys) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    argv = ["train", "shapes", "--method", "art", "--config", str(config), "--root", str(tiny_shapes), "--out", str(out)]
    assert run([*argv, "--epochs", "2", "--warmup-epochs", "1"]) == 0
    assert [r["method"] for r in read_jsonl(out / "metrics.jsonl")] == ["natural", "art"]
    assert run([*argv, "--epochs", "1", "--warmup-epochs", "1", "--out", str(tmp_path / "b")]) == 2
    assert "warmup_epochs (1) must be below epochs (1)" in capsys.readouterr().err


def test_train_cub_art_resolves_the_default_arch_without_arch(tmp_path, cub_tree, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "cub", "--method", "art", "--root", str(cub_tree), "--out", str(out), "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "2", "--device", "cpu", "--set", "image_size=32", "--set", "max_train_batches=1",
            "--set", "eval.max_batches=1", "--set", "eval_batch_size=2", "--set", "art.steps=1", "--set", "workers=0"]
    assert run(args) == 0
    assert "cub_resnet50_art.yaml" in capsys.readouterr().err
    saved = load_config(out / "config.yaml")
    assert (saved.arch, saved.method, saved.transform) == ("resnet50", "art", "cub")


def test_a_setting_without_a_shipped_config_says_it_trains_with_the_built_in_defaults(tmp_path, tiny_shapes, capsys) -> None:
    """`wsol train shapes --arch small-cnn` has no shipped config: the built-in defaults (no augmentation, no schedule) are
    no recipe, and a note says so and names the shipped configs; a shipped config or --config gets no such note."""
    fast = ["--root", str(tiny_shapes), "--epochs", "1", "--set", "max_train_batches=1", "--set", "eval.max_batches=1", "--device", "cpu"]
    assert run(["train", "shapes", "--arch", "small-cnn", *fast, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "note: no shipped config for shapes with arch small-cnn and method natural: training with the built-in defaults" in err
    assert "shapes_small-cnn-bn_natural.yaml" in err
    assert run(["train", "shapes", *fast, "--out", str(tmp_path / "b")]) == 0
    assert "no shipped config" not in capsys.readouterr().err
