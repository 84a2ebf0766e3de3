"""A model is evaluated as it was trained: a run on a CUB-format tree of 40x40 images records that size
and transform, and `wsol localize` + `evaluate` then reproduce the run's own test top-1."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wsol.cli import run
from wsol.utils.io import read_jsonl

SIZE = 40


def _cub_tree(root: Path, n_per_class: int = 8) -> Path:
    """Two classes told apart by colour, every image SIZE x SIZE; half of each class is test."""
    rng = np.random.default_rng(0)
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    image_id = 0
    for c in (1, 2):
        for i in range(n_per_class):
            image_id += 1
            rel = f"00{c}.class{c}/img_{image_id:03d}.png"
            image = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
            x, y = int(rng.integers(0, SIZE // 2)), int(rng.integers(0, SIZE // 2))
            image[y : y + SIZE // 2, x : x + SIZE // 2, c] = 230
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / "images" / rel), image)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c}")
            lines["split"].append(f"{image_id} {int(i % 2 == 0)}")
            lines["boxes"].append(f"{image_id} {x} {y} {SIZE // 2} {SIZE // 2}")
    for name, rows in (("images", "images"), ("image_class_labels", "labels"), ("train_test_split", "split"), ("bounding_boxes", "boxes")):
        (root / f"{name}.txt").write_text("\n".join(lines[rows]) + "\n")
    (root / "classes.txt").write_text("1 001.class1\n2 002.class2\n")
    return root


def test_localize_reproduces_the_training_runs_top1_at_a_non_224_size(tmp_path, capsys) -> None:
    root = _cub_tree(tmp_path / "CUB")
    out = tmp_path / "run"
    argv = ["train", "cub", "--arch", "small-cnn-bn", "--root", str(root), "--out", str(out), "--epochs", "2",
            "--batch-size", "4", "--lr", "0.05", "--set", "eval_batch_size=8"]
    assert run(argv) == 0, capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert meta["input_size"] == SIZE and meta["eval_transform"] == {"kind": "none", "size": None}
    trained_top1 = read_jsonl(out / "metrics.jsonl")[-1]["test/acc"]
    preds = tmp_path / "preds.json"
    assert run(["localize", "--checkpoint", str(out / "model.safetensors"), "--dataset", "cub", "--root", str(root), "--out", str(preds)]) == 0
    assert run(["evaluate", "--pred", str(preds), "--dataset", "cub", "--root", str(root)]) == 0
    scored = json.loads(preds.with_suffix(".metrics.json").read_text())
    assert scored["images"] == 8
    assert abs(scored["top1_acc"] - 100.0 * trained_top1) < 1e-6
    # Colour tells the classes apart at any scale, so top-1 alone would not notice a resize to 224; the
    # per-image scores must be the model's softmax on the 40x40 files themselves, read here with cv2.
    from wsol.models import load_model

    model = load_model(out / "model.safetensors").eval()
    results = sorted(json.loads(preds.read_text()), key=lambda r: r["image_id"])
    paths = dict(line.split() for line in (root / "images.txt").read_text().splitlines())
    files = [cv2.imread(str(root / "images" / paths[str(r["image_id"])]))[..., ::-1] for r in results]
    images = torch.from_numpy(np.stack(files).copy()).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        score, pred = model(images).softmax(dim=1).max(dim=1)
    assert [r["category_id"] for r in results] == (pred + 1).tolist()
    assert [r["score"] for r in results] == pytest.approx(score.tolist(), abs=1e-5)
