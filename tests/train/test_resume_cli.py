"""`wsol train --resume` keeps the run's own length unless --epochs says otherwise."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List

from wsol.cli import run
from wsol.data.shapes import synthesize_shapes
from wsol.utils.io import read_jsonl

TINY = """\
dataset: shapes
arch: small-cnn
epochs: 3
batch_size: 4
eval_batch_size: 8
max_train_batches: 1
optim:
  lr: 0.01
"""


def _tiny_training(tmp_path: Path, monkeypatch) -> Callable[[Path], List[str]]:
    """A tiny shapes set and config; returns the ``wsol train`` argv that trains them into a given folder."""
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    root = synthesize_shapes(tmp_path / "shapes", n_train=8, n_test=8, size=32, num_classes=3, seed=0)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    return lambda out: ["train", "shapes", "--config", str(config), "--root", str(root), "--out", str(out)]


def test_resume_without_epochs_keeps_the_runs_own_epoch_count(tmp_path: Path, monkeypatch, capsys) -> None:
    train_into = _tiny_training(tmp_path, monkeypatch)
    out = tmp_path / "run"
    base = train_into(out)
    assert run([*base, "--epochs", "1"]) == 0
    assert run([*base, "--resume"]) == 0  # the config says 3 epochs; the run was started with 1
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]
    capsys.readouterr()
    assert run([*base, "--resume", "--epochs", "2"]) == 0  # an explicit --epochs extends it
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert f"note: resuming {out} after epoch 1 of 2\n" in capsys.readouterr().err  # it said nothing: a fresh start looked alike


def test_resume_keeps_the_epoch_count_when_config_yaml_is_missing_or_broken(tmp_path: Path, monkeypatch) -> None:
    """config.yaml is only a copy for the user; the training state resume continues also holds the epoch count."""
    train_into = _tiny_training(tmp_path, monkeypatch)
    for name, spoil in (("missing", lambda p: p.unlink()), ("broken", lambda p: p.write_text("epochs: [\n"))):
        out = tmp_path / name
        base = train_into(out)
        assert run([*base, "--epochs", "1"]) == 0
        spoil(out / "config.yaml")
        assert run([*base, "--resume"]) == 0  # the config says 3 epochs; the run was started with 1
        assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1], name


def test_resume_to_fewer_epochs_than_done_is_refused_and_keeps_the_run(tmp_path: Path, monkeypatch, capsys) -> None:
    """`--resume --epochs 1` of a 2-epoch run printed the epoch-2 record with status 0 and rewrote config.yaml to
    `epochs: 1` beside a 2-epoch model; it is a mistake: one line, status 2, the run untouched."""
    train_into = _tiny_training(tmp_path, monkeypatch)
    out = tmp_path / "run"
    base = train_into(out)
    assert run([*base, "--epochs", "2"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert run([*base, "--resume", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "has done 2 already" in err and "--epochs 2 or more" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert run([*base, "--resume", "--epochs", "2"]) == 0  # as many as done: nothing left to do, and no error


def test_resume_of_a_run_saved_before_a_config_key_existed_and_of_another_config(tmp_path: Path, monkeypatch, capsys) -> None:
    """A state saved before `dataset_options` existed resumes (the key takes its default); another learning rate is
    refused with what it was and is."""
    import torch

    train_into = _tiny_training(tmp_path, monkeypatch)
    out = tmp_path / "run"
    base = train_into(out)
    assert run([*base, "--epochs", "1"]) == 0
    state = torch.load(out / "train_state.pt", weights_only=True)
    del state["config"]["dataset_options"]
    torch.save(state, out / "train_state.pt")
    assert run([*base, "--resume", "--epochs", "2"]) == 0
    capsys.readouterr()
    assert run([*base, "--resume", "--epochs", "3", "--lr", "0.02"]) == 2
    assert capsys.readouterr().err.strip().endswith("the config differs from the saved one (optim.lr was 0.01, now 0.02)")
