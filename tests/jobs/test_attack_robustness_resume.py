"""Robustness runs: APGD (pyautoattack) and PGD are seeded per chunk of --batch-size samples, so an interrupted run resumed
with the same arguments gives exactly the table of an uninterrupted one."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import wsol.jobs.robustness as job


class _Centres(nn.Module):
    """Nearest class centre on the image mean (centres (4c + 50)/255): small ε reach the class boundaries."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres = (4 * torch.arange(10, device=x.device) + 50) / 255
        return -((x.mean((1, 2, 3))[:, None] - centres) * 255) ** 2


def _cifar(root: Path, n_test: int = 12) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)

    def batch(labels):
        data = np.stack([rng.integers(4 * c, 4 * c + 101, size=3072) for c in labels]).astype(np.uint8)
        return {b"labels": list(labels), b"data": data, b"filenames": [b"x.png"] * len(labels), b"batch_label": b"b"}

    for name, obj in [("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]}),
                      *[(f"data_batch_{i}", batch([i])) for i in range(1, 6)], ("test_batch", batch([i % 10 for i in range(n_test)]))]:
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh)
    return root


def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(job, "load_eval_model", lambda name, weights, device: _Centres().to(device).eval())
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    root = _cifar(tmp_path / "cifar")
    s = job.RobustnessSettings(model="centres", weights=[], dataset="cifar10", n=10, seed=2, eps=1 / 255, ladder=["apgd-dlr", "apgd-ce"],
                               pgd_steps=3, batch_size=4, n_iter=4, n_restarts=1)
    job.evaluate_robustness(s, root, tmp_path / "whole", "cpu")
    out = tmp_path / "cut"
    job.evaluate_robustness(s, root, out, "cpu")
    for kind in ("ladder", "pgd"):
        path = out / f"{kind}-fp32.rank0.jsonl"
        lines = path.read_text().splitlines()
        assert len(lines) == 3  # 10 samples in chunks of 4
        path.write_text(lines[1] + "\n")  # only the middle chunk survived the interruption
    job.evaluate_robustness(s, root, out, "cpu")
    for name in ("ladder_per_class_fp32.csv", "ladder_confusion_fp32.csv", "pgd_fp32.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    accuracy = [line.split(",")[3] for line in (out / "ladder_fp32.csv").read_text().splitlines()]
    assert accuracy == [line.split(",")[3] for line in (tmp_path / "whole" / "ladder_fp32.csv").read_text().splitlines()]
