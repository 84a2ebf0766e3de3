"""Shared fixtures: tiny dataset trees written in the real on-disk formats."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
from PIL import Image

# (image_id, class_id, relative path, is_train, (w, h) of the image, CUB box x y w h)
CUB_IMAGES = [
    (1, 1, "001.Red_bird/Red_bird_0001.jpg", 1, (40, 30), (5.0, 6.0, 20.0, 10.0)),
    (2, 1, "001.Red_bird/Red_bird_0002.jpg", 0, (32, 32), (1.5, 2.5, 10.0, 12.0)),
    (3, 2, "002.Blue_bird/Blue_bird_0003.jpg", 1, (50, 40), (10.0, 8.0, 30.0, 20.0)),
    (4, 2, "002.Blue_bird/Blue_bird_0004.jpg", 0, (24, 36), (0.0, 0.0, 24.0, 36.0)),
    (5, 2, "002.Blue_bird/Blue_bird_0005.jpg", 0, (30, 20), (3.0, 4.0, 5.0, 6.0)),
]


def _shapes_run(
    base: Path, n_test: int, num_classes: int, seed: int, torch_seed: int = 0, method: str = "natural", n_train: int = 8
) -> dict:
    """A tiny 32×32 ``shapes`` tree under ``base`` and an untrained small-cnn checkpoint for it (seeded)."""
    import torch

    from wsol.data.shapes import synthesize_shapes
    from wsol.models import build_model, save_model

    root = synthesize_shapes(base / "shapes", n_train=n_train, n_test=n_test, size=32, num_classes=num_classes, seed=seed)
    torch.manual_seed(torch_seed)
    checkpoint = save_model(build_model("small-cnn", num_classes, input_size=32), base / "model", dataset="shapes", method=method)
    return {"base": base, "root": root, "checkpoint": checkpoint}


@pytest.fixture(scope="session")
def shapes_run():
    """The :func:`_shapes_run` factory, for module-scoped fixtures that build a tiny run."""
    return _shapes_run


def soft_mask(w: int, h: int, box: tuple) -> np.ndarray:
    """A CUB-like soft mask: 255 inside the box, 100 (below threshold) in a 2-px ring around it."""
    x, y, bw, bh = (int(round(v)) for v in box)
    mask = np.zeros((h, w), np.uint8)
    mask[max(0, y - 2) : y + bh + 2, max(0, x - 2) : x + bw + 2] = 100
    mask[y : y + bh, x : x + bw] = 255
    return mask


@pytest.fixture
def cub_tree(tmp_path: Path) -> Path:
    """A 5-image CUB_200_2011 folder (2 classes) with soft masks; image 1's mask is 'LA' mode."""
    root = tmp_path / "CUB_200_2011"
    rng = np.random.default_rng(0)
    lines: Dict[str, List[str]] = {"images": [], "labels": [], "split": [], "boxes": []}
    for image_id, class_id, rel, train, (w, h), box in CUB_IMAGES:
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
        seg = tmp_path / "CUB_200_2011" / "segmentations" / Path(rel).with_suffix(".png")
        seg.parent.mkdir(parents=True, exist_ok=True)
        mask = soft_mask(w, h, box)
        if image_id == 1:
            alpha = np.where(mask == 255, 0, 255).astype(np.uint8)
            Image.fromarray(np.stack([mask, alpha], axis=2), mode="LA").save(seg)
        else:
            Image.fromarray(mask, mode="L").save(seg)
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {class_id}")
        lines["split"].append(f"{image_id} {train}")
        lines["boxes"].append(f"{image_id} {box[0]} {box[1]} {box[2]} {box[3]}")
    (root / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(reversed(lines["labels"])) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(lines["boxes"]) + "\n")
    (root / "classes.txt").write_text("1 001.Red_bird\n2 002.Blue_bird\n")
    return root


@pytest.fixture
def cub_spec() -> dict:
    """What ``cub_tree`` writes: ``images`` (rows as in CUB_IMAGES) and the ``soft_mask`` function."""
    return {"images": CUB_IMAGES, "soft_mask": soft_mask}


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now: MASTER_PORT for the two-process gloo tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
