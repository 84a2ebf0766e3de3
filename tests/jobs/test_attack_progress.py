"""A long attack run shows it is alive in a log: one progress line per batch on stderr; stdout counts the attacked samples."""
from __future__ import annotations

import json

import torch

from wsol.cli import run
from wsol.data.shapes import synthesize_shapes
from wsol.models import build_model, save_model


def test_one_line_per_batch_in_a_log(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("WSOL_PROGRESS", raising=False)
    root = synthesize_shapes(tmp_path / "shapes", n_train=2, n_test=6, size=32, num_classes=2, seed=0)
    torch.manual_seed(0)
    checkpoint = save_model(build_model("small-cnn", 2, input_size=32), tmp_path / "model", dataset="shapes", method="natural")
    argv = ["attack", "attribution", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--root", str(root), "--out", str(tmp_path / "a"),
            "--attribution", "grad", "--k", "10", "--steps", "1", "--eps", "1/255", "--pgd-steps", "0", "--n", "5", "--batch-size", "2"]
    assert run(argv) == 0
    captured = capsys.readouterr()
    attacked = json.loads((tmp_path / "a" / "summary.json").read_text())["attacked"]
    assert f"(5 samples, {attacked} attacked)" in captured.out
    lines = captured.err.splitlines()
    assert [line.split(": ")[1].split(" in ")[0] for line in lines[:3]] == ["1/3", "2/3", "3/3"]
    assert lines[0].startswith("IFIA grad/topk batches (0 of 5 samples done before)") and "\r" not in "".join(lines)
