"""Box fitting: hand-made maps with known boxes, and exact equality with a plain cv2 loop."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from wsol.localize.boxes import box_from_map, boxes_from_maps, map_boxes
from wsol.localize.levels import default_thresholds, threshold_levels, to_uint8
from wsol.localize.masks import masks_from_maps


def reference_boxes(scoremap: np.ndarray, threshold: float, largest: bool) -> list:
    """wsolevaluation's per-threshold recipe, written plainly (boxes x2/y2 exclusive, no clipping)."""
    image = (scoremap * 255).astype(np.uint8)
    _, binary = cv2.threshold(image, int(threshold * np.max(image)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return []
    if largest:
        contours = [max(contours, key=cv2.contourArea)]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append([x, y, x + w, y + h])
    return out


def test_uint8_and_levels_follow_wsolevaluation():
    m = np.array([[0.0, 0.5, 1.0, 0.999]], np.float32)
    assert to_uint8(m).tolist() == [[[0, 127, 255, 254]]]
    # int(t * max): 0.5 * 255 = 127.5 -> 127 ; 0.3 * 200 = 60.00000000000001 -> 60
    assert threshold_levels([255, 200], [0.5, 0.3]).tolist() == [[127, 76], [100, 60]]
    assert to_uint8(np.array([[np.nan, -1.0, 2.0]])).tolist() == [[[0, 0, 255]]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_uint8_equals_numpy_expression(dtype):
    rng = np.random.default_rng(3)
    m = rng.uniform(-0.2, 1.2, (3, 40, 70)).astype(dtype)
    m.flat[::7] = (np.arange(m.size)[::7] % 256 / 255).astype(dtype)  # exact k/255 values
    m.flat[5::97] = np.nan
    m[1, 0, :4] = [np.inf, -np.inf, -0.0, 1.0]
    expected = (np.clip(np.where(np.isnan(m), 0, m), 0, 1) * 255).astype(np.uint8)
    for workers in (1, 3):
        np.testing.assert_array_equal(to_uint8(m, workers=workers), expected)
    inside = np.clip(np.nan_to_num(m, nan=0.0), 0, 1)
    np.testing.assert_array_equal(to_uint8(inside, workers=2), (inside * 255).astype(np.uint8))


def test_single_block_and_threshold_cut():
    m = np.zeros((6, 8), np.float32)
    m[1:4, 2:5] = 1.0  # rows 1..3, cols 2..4
    m[4, 6] = 0.5  # u8 127: on below t = 0.5 (level 127 keeps only > 127)
    assert box_from_map(m, 0.0, "largest").tolist() == [[2, 1, 5, 4]]
    assert sorted(box_from_map(m, 0.0, "all").tolist()) == [[2, 1, 5, 4], [6, 4, 7, 5]]
    assert box_from_map(m, 0.5, "all").tolist() == [[2, 1, 5, 4]]


def test_ring_gives_outer_and_hole_boxes():
    m = np.zeros((7, 7), np.float32)
    m[1:6, 1:6] = 1.0
    m[3, 3] = 0.0  # one-pixel hole at (3, 3)
    boxes = sorted(box_from_map(m, 0.2, "all").tolist())
    # Outer region rows/cols 1..5 -> [1, 1, 6, 6]; the hole contour runs through the ring pixels
    # around it, cols/rows 2..4 -> [2, 2, 5, 5].
    assert boxes == [[1, 1, 6, 6], [2, 2, 5, 5]]
    assert box_from_map(m, 0.2, "largest").tolist() == [[1, 1, 6, 6]]


def test_border_touching_box_is_not_clipped():
    m = np.zeros((5, 6), np.float32)
    m[:, 3:] = 1.0  # touches top, bottom and right border
    assert box_from_map(m, 0.1, "largest").tolist() == [[3, 0, 6, 5]]


def test_no_region_and_constant_maps_give_no_box():
    zero = np.zeros((4, 5), np.float32)
    out = boxes_from_maps(zero, [0.0, 0.5])
    assert [b.shape for b in out[0]] == [(0, 4), (0, 4)]
    # A constant non-zero map: u8 = 127 everywhere, level int(t * 127) < 127 -> every pixel on.
    const = np.full((4, 5), 0.5, np.float32)
    assert box_from_map(const, 0.9, "largest").tolist() == [[0, 0, 5, 4]]


def test_largest_picks_max_contour_area():
    m = np.zeros((10, 12), np.float32)
    m[1:3, 1:3] = 1.0  # 2x2 block: contour area 1
    m[5:9, 6:11] = 1.0  # 4x5 block: contour area 3*4 = 12
    assert box_from_map(m, 0.5, "largest").tolist() == [[6, 5, 11, 9]]
    assert sorted(box_from_map(m, 0.5, "all").tolist()) == [[1, 1, 3, 3], [6, 5, 11, 9]]


def test_accepts_tensors_and_batches():
    m = torch.zeros(2, 6, 6)
    m[0, 2:4, 2:4] = 1.0
    out = boxes_from_maps(m, np.array([0.1, 0.6]), mode="largest")
    assert len(out) == 2 and len(out[0]) == 2
    assert out[0][1].dtype == np.float32 and out[0][1].tolist() == [[2, 2, 4, 4]]
    assert out[1][0].shape == (0, 4)


def _random_maps(rng: np.random.Generator, count: int) -> list:
    maps = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(8, 48, size=2))
        kind = i % 5
        if kind == 0:
            m = rng.random((h, w))
        elif kind == 1:
            m = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.7, 3.0))
        elif kind == 2:
            m = (rng.random((h, w)) > 0.6) * rng.random((h, w))
        elif kind == 3:
            m = np.round(rng.random((h, w)) * 3) / 3  # few levels: plateaus, ties
        else:
            m = (rng.random((h, w)) > 0.85).astype(float)  # isolated pixels: zero-area contours
        m = m - m.min()
        if m.max() > 0:
            m = m / m.max()
        maps.append(m.astype(np.float32))
    return maps


@pytest.mark.parametrize("mode", ["largest", "all"])
def test_sweep_equals_plain_cv2_loop(mode):
    rng = np.random.default_rng(1234)
    thresholds = np.arange(0, 1, 0.02)
    for m in _random_maps(rng, 50):
        mb = map_boxes(to_uint8(m)[0], thresholds, mode)
        for j, t in enumerate(thresholds):
            expected = reference_boxes(m, t, mode == "largest")
            assert mb.at(j).astype(int).tolist() == expected, (m.shape, t)


def test_masks_cover_exactly_the_boxed_pixels():
    rng = np.random.default_rng(7)
    maps = np.stack([ndimage.gaussian_filter(rng.random((20, 24)), 2) for _ in range(3)]).astype(np.float32)
    maps = (maps - maps.min(axis=(1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)
    for t in (0.0, 0.3, 0.77):
        masks = masks_from_maps(torch.from_numpy(maps), t).numpy()
        for m, mask in zip(maps, masks):
            u8 = (m * 255).astype(np.uint8)
            _, binary = cv2.threshold(u8, int(t * np.max(u8)), 255, cv2.THRESH_BINARY)
            assert np.array_equal(mask, binary > 0)


def test_small_canvases_and_fine_groups_give_the_same_boxes(monkeypatch):
    import wsol.localize.boxes as boxes_module

    monkeypatch.setattr(boxes_module, "_MAX_CANVAS_PIXELS", 300)  # several canvases per group
    monkeypatch.setattr(boxes_module, "_MIN_GROUP_AREA", 1)  # many small groups
    rng = np.random.default_rng(99)
    thresholds = np.arange(0, 1, 0.05)
    for m in _random_maps(rng, 10):
        mb = map_boxes(to_uint8(m)[0], thresholds, "all")
        for j, t in enumerate(thresholds):
            assert mb.at(j).astype(int).tolist() == reference_boxes(m, t, largest=False)


def _nested() -> np.ndarray:
    """A ring holding an island that holds a smaller ring: contours at three depths."""
    m = np.zeros((24, 24), np.float32)
    m[2:22, 2:22] = 1.0
    m[5:19, 5:19] = 0.0
    m[7:17, 7:17] = 0.6
    m[9:15, 9:15] = 0.0
    m[11:13, 11:13] = 0.9
    return m


def _blobs() -> np.ndarray:
    """Three Gaussian blobs of different heights and widths: the winner changes as the level drops."""
    yy, xx = np.mgrid[0:40, 0:48].astype(np.float32)
    m = np.zeros((40, 48), np.float32)
    for cx, cy, s, a in ((10, 10, 3, 1.0), (34, 12, 7, 0.7), (22, 30, 5, 0.85)):
        m += a * np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / s**2)
    return m / m.max()


def _many_components(size: int) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    m[::2, ::2] = np.linspace(0.1, 1.0, (size + 1) // 2 * ((size + 1) // 2)).reshape((size + 1) // 2, -1)
    return m


def _edge_maps() -> dict:
    single = np.zeros((9, 7), np.float32)
    single[4, 3] = 1.0
    corner = np.zeros((9, 7), np.float32)
    corner[0, 0] = 1.0
    border = np.zeros((16, 16), np.float32)
    border[:, 0] = 0.8
    border[0, :] = 0.5
    border[-3:, -5:] = 1.0
    rng = np.random.default_rng(5)
    return {
        "all-zero": np.zeros((8, 10), np.float32),
        "constant": np.full((8, 10), 0.7, np.float32),
        "single pixel": single,
        "corner pixel": corner,
        "touching the border": border,
        "nested": _nested(),
        "many components": _many_components(31),
        "equal areas": np.kron(np.eye(4, dtype=np.float32), np.ones((3, 3), np.float32)),
        "equal areas, other order": np.kron(np.fliplr(np.eye(4, dtype=np.float32)), np.ones((3, 3), np.float32)),
        "lines and diagonals": np.kron(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)) + np.pad(np.ones((1, 4), np.float32), ((3, 5), (1, 4))),
        "blobs growing at different levels": _blobs(),
        "noise": rng.random((64, 64), dtype=np.float32),
        "smooth": ndimage.gaussian_filter(rng.random((48, 40)), 4).astype(np.float32),
    }


@pytest.mark.parametrize("name", list(_edge_maps()))
def test_largest_box_equals_plain_loop(name):
    m = _edge_maps()[name]
    thresholds = default_thresholds(0.01)
    mb = map_boxes(to_uint8(m)[0], thresholds, "largest")
    for j, t in enumerate(thresholds):
        got = mb.at(j).astype(int).tolist()
        assert got == reference_boxes(m, t, largest=True), (name, t)
        assert len(got) <= 1


def test_nested_map_keeps_the_outer_region():
    m = _nested()
    assert map_boxes(to_uint8(m)[0], np.array([0.0]), "largest").at(0).tolist() == [[2, 2, 22, 22]]
