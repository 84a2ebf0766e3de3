"""Transforms keep boxes and masks on the same pixels, never drop or crash on boxes, and invert exactly in eval."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest
import torch

from wsol.data.sample import boxes_to_original
from wsol.data.transforms import build_transform, transform_names
from wsol.errors import ConfigError, UnknownNameError


def _rectangle(h: int, w: int, box: Tuple[int, int, int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A black image with a solid white rectangle; its exact box and mask."""
    x0, y0, x1, y1 = box
    image = np.zeros((h, w, 3), np.uint8)
    image[y0:y1, x0:x1] = 255
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return image, np.array([box], np.float32), mask


def _tight(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def test_kinds() -> None:
    assert transform_names() == ["balance", "cifar", "cub", "none"]
    with pytest.raises(UnknownNameError, match="choose one of"):
        build_transform("imagenet", True, 224)
    with pytest.raises(ConfigError, match="no option 'crop'"):
        build_transform("cub", True, 224, crop=3)
    with pytest.raises(ConfigError, match="resize=100"):
        build_transform("cub", True, 224, resize=100)


@pytest.mark.parametrize("kind, size, resize", [("cub", 224, None), ("cub", 64, 80), ("balance", 32, None)])
def test_eval_resize_maps_back_exactly(kind: str, size: int, resize) -> None:
    opts = {"resize": resize} if resize else {}
    t = build_transform(kind, False, size, **opts)
    h, w = 375, 500
    image, _, mask = _rectangle(h, w, (60, 27, 385, 331))
    boxes = np.array([[60, 27, 385, 331], [0.5, 1.5, 499.5, 374]], np.float32)
    img, out, msk, to_orig = t(image, boxes, mask)
    assert img.shape == (3, size, size) and msk.shape == (size, size)
    assert to_orig == pytest.approx((w / size, h / size, 0.0, 0.0))
    assert out[0].tolist() == pytest.approx([60 * size / w, 27 * size / h, 385 * size / w, 331 * size / h], abs=1e-4)
    back = boxes_to_original(out.double(), to_orig)
    assert torch.allclose(back, torch.from_numpy(boxes).double(), atol=1e-3)
    assert np.abs(_tight(msk.numpy()) - out[0].numpy()).max() <= 1.0


@pytest.mark.parametrize("seed", range(6))
def test_cub_train_keeps_box_on_the_object(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 120, 160
    x0, y0 = int(rng.integers(10, 70)), int(rng.integers(10, 50))
    image, boxes, mask = _rectangle(h, w, (x0, y0, x0 + 60, y0 + 50))
    t = build_transform("cub", True, 64, seed=seed)
    img, out, msk, to_orig = t(image, boxes, mask)
    assert img.shape == (3, 64, 64) and out.shape == (1, 4)
    bright = img[0].numpy() > 0.5
    assert msk.any()  # the crop keeps part of the object, so the checks below always run
    assert np.abs(_tight(msk.numpy()) - out[0].numpy()).max() <= 1.5
    assert np.abs(_tight(bright) - out[0].numpy()).max() <= 1.5
    # to_orig: resize (scale w/73, h/73) and crop offset; the 64-px crop maps inside the image
    sx, sy, tx, ty = to_orig
    assert sx == pytest.approx(w / 73) and sy == pytest.approx(h / 73)
    assert 0 <= tx and tx + 64 * sx <= w + 1e-6 and 0 <= ty and ty + 64 * sy <= h + 1e-6


def test_cub_train_to_orig_rows_match_the_source() -> None:
    # a vertical ramp: the flip leaves rows alone, so row i must come from y = (i + 0.5) * sy + ty
    h, w = 150, 100
    ramp = np.repeat(np.linspace(0, 255, h)[:, None], w, axis=1).astype(np.uint8)
    image = np.stack([ramp] * 3, axis=2)
    t = build_transform("cub", True, 64, seed=3)
    for _ in range(4):
        img, _, _, (sx, sy, tx, ty) = t(image, np.zeros((0, 4), np.float32), None)
        rows = img[0, :, 32].numpy() * 255
        ys = (np.arange(64) + 0.5) * sy + ty
        expected = np.interp(ys - 0.5, np.arange(h), np.linspace(0, 255, h))
        # bilinear resize and uint8 rounding stay within ~1 level; one source row is 255/149 ≈ 1.7 levels and
        # one crop pixel is sy ≈ 2 rows, so an offset wrong by half a pixel or more is caught
        assert np.abs(rows - expected).max() < 1.5


@pytest.mark.parametrize("seed", range(4))
def test_balance_keeps_box_on_the_object(seed: int) -> None:
    image, boxes, mask = _rectangle(64, 64, (24, 22, 40, 44))
    img, out, msk, to_orig = build_transform("balance", True, 32, seed=seed)(image, boxes, mask)
    assert img.shape == (3, 32, 32) and to_orig == (2.0, 2.0, 0.0, 0.0)
    assert np.abs(_tight(msk.numpy()) - out[0].numpy()).max() <= 2.0


def test_cifar_train_and_eval() -> None:
    image, boxes, mask = _rectangle(32, 32, (8, 6, 20, 26))
    t = build_transform("cifar", True, 32, seed=0)
    seen = set()
    for _ in range(20):
        img, out, msk, (sx, sy, tx, ty) = t(image, boxes, mask)
        assert img.shape == (3, 32, 32)
        assert (sx, sy) == (1.0, 1.0) and -4 <= tx <= 4 and -4 <= ty <= 4
        assert np.abs(_tight(msk.numpy()) - out[0].numpy()).max() <= 1.0
        seen.add((tx, ty))
    assert len(seen) > 3
    ident = build_transform("cifar", False, 32)
    img, out, msk, to_orig = ident(image, boxes, mask)
    assert torch.equal(img, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    assert out.tolist() == boxes.tolist() and to_orig == (1.0, 1.0, 0.0, 0.0)


def test_boxes_leaving_the_frame_are_kept_clipped() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    boxes = np.array(
        [[0, 0, 2, 2], [30, 30, 32, 32], [5, 5, 5, 9], [40, 40, 50, 50], [-3, -3, 40, 40]],
        np.float32,
    )  # corner boxes, a zero-width box, a box outside the image, one larger than it
    for kind, size in (("cifar", 32), ("cub", 24), ("balance", 32)):
        t = build_transform(kind, True, size, seed=1)
        for _ in range(25):
            _, out, msk, _ = t(image, boxes, None)
            assert out.shape == (5, 4) and msk is None
            o = out.numpy()
            assert (o >= 0).all() and (o <= size).all()
            assert (o[:, 2] >= o[:, 0]).all() and (o[:, 3] >= o[:, 1]).all()
        _, empty, _, _ = t(image, np.zeros((0, 4), np.float32), None)
        assert empty.shape == (0, 4)


def test_none_resizes_to_the_size_it_is_given_and_seeds_repeat() -> None:
    image, boxes, mask = _rectangle(20, 30, (2, 3, 12, 15))
    for train in (True, False):
        img, out, msk, to_orig = build_transform("none", train, 60)(image, boxes, mask)
        assert img.shape == (3, 60, 60) and msk.shape == (60, 60) and to_orig == (0.5, 1 / 3, 0.0, 0.0)
        assert out.tolist() == [[4.0, 9.0, 24.0, 45.0]]
    a = [build_transform("cub", True, 16, seed=5)(image, boxes, mask)[0] for _ in range(2)]
    assert torch.equal(a[0], a[1])
    t = build_transform("cub", True, 16, seed=5)
    runs = [t(image, boxes, mask)[3] for _ in range(8)]
    assert len(set(runs)) > 1


def test_dataloader_workers_get_their_own_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    image, boxes, mask = _rectangle(64, 64, (2, 3, 40, 50))
    results = []
    for worker in (0, 1):
        t = build_transform("cub", True, 32, seed=0)
        info = SimpleNamespace(id=worker, seed=1234 + worker)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        results.append([t(image, boxes, mask)[3] for _ in range(6)])
    assert results[0] != results[1]


def test_transforms_pickle_for_spawned_workers() -> None:
    import pickle

    image, boxes, mask = _rectangle(40, 40, (5, 5, 30, 30))
    for kind, train in (("cub", True), ("cub", False), ("cifar", True), ("balance", True), ("none", False)):
        t = build_transform(kind, train, 32, seed=2)
        copy = pickle.loads(pickle.dumps(t))
        a, b = t(image, boxes, mask), copy(image, boxes, mask)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3] == b[3]


def test_building_a_transform_makes_no_network_call() -> None:
    """albumentations checks PyPI for updates on import unless told not to; wsol tells it (no network at run time)."""
    import os
    import subprocess
    import sys

    code = ("import socket\n"
            "def refuse(*a, **k):\n    raise SystemExit('network call')\n"
            "socket.create_connection = refuse\nsocket.socket.connect = refuse\n"
            "from wsol.data.transforms import build_transform\nbuild_transform('cub', train=True, size=64)\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
