"""Benchmark: MaxBoxAcc(V2) over a threshold sweep, wsol's evaluator vs a plain per-threshold loop.

For each map set in ``--maps`` it builds ``--n`` seeded maps, CUB-test sized by default (5,794
maps, 224×224): ``smooth`` (sums of a few Gaussian blobs plus a little smoothed noise, one or
two GT boxes each) and ``noise`` (uniform noise, one random GT box: the worst case for contour
tracing, with thousands of regions per threshold). It then times two ways of computing
MaxBoxAccV2 (``--mode all``) or MaxBoxAcc (``--mode largest``) over ``np.arange(0, 1, interval)``:

* reference: for each map and threshold, ``cv2.threshold`` + ``cv2.findContours(RETR_TREE)`` +
  (largest: ``max`` by ``cv2.contourArea``) + ``cv2.boundingRect``, then IoU against the GT
  boxes, written as plainly as possible;
* ``wsol.metrics.localization.BoxEvaluator`` (all thresholds of a map in one pass).

It asserts that the per-threshold hit counts are identical and, with ``--mode largest``, that
``wsol.localize.boxes.boxes_from_maps`` gives exactly the reference's boxes (an untimed check),
then prints one row per map set: both times and the ratio.
Map generation is not timed. The evaluator's one-time start-up (numba compiles its kernels on
the first call in a fresh environment, or loads them from the on-disk cache afterwards) is
timed and printed separately, on two small maps, before the timed loop. The load average is
printed too: the timings mean little on a busy machine.
Run: ``python tools/bench_localize.py --n 500 --mode largest --maps smooth noise``.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import List, Tuple

import cv2
import numpy as np

from wsol.localize.boxes import boxes_from_maps
from wsol.metrics.localization import BoxEvaluator


def make_maps(rng: np.random.Generator, n: int, size: int, noise: float) -> Tuple[np.ndarray, List[np.ndarray]]:
    """n float32 maps in [0, 1] (min-max normalized) and their GT boxes (x2/y2 exclusive)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    maps = np.empty((n, size, size), np.float32)
    gts: List[np.ndarray] = []
    for i in range(n):
        m = np.zeros((size, size), np.float32)
        boxes = []
        for b in range(int(rng.integers(1, 5))):
            cx, cy = rng.uniform(0.1, 0.9, size=2) * size
            sx, sy = rng.uniform(0.04, 0.25, size=2) * size
            amp = rng.uniform(0.3, 1.0) if b else 1.0
            m += amp * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
            if b < 2 and (b == 0 or rng.random() < 0.25):
                jitter = rng.normal(0, 0.15, size=4) * np.array([sx, sy, sx, sy])
                box = np.array([cx - 1.7 * sx, cy - 1.7 * sy, cx + 1.7 * sx, cy + 1.7 * sy]) + jitter
                box = np.clip(np.round(box), 0, size)
                if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                    boxes.append(box)
        if noise > 0:
            coarse = rng.standard_normal((size // 8, size // 8)).astype(np.float32)
            m += noise * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        m -= m.min()
        m /= m.max()
        maps[i] = m
        gts.append(np.array(boxes if boxes else [[0.0, 0.0, size, size]], dtype=np.float64))
    return maps, gts


def _iou(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_noise_maps(rng: np.random.Generator, n: int, size: int) -> Tuple[np.ndarray, List[np.ndarray]]:
    """n uniform-noise float32 maps in [0, 1) and one random GT box each (x2/y2 exclusive)."""
    maps = rng.random((n, size, size), dtype=np.float32)
    gts = []
    for _ in range(n):
        x1, y1 = rng.integers(0, size // 2, size=2)
        x2, y2 = rng.integers(size // 2 + 2, size + 1, size=2)
        gts.append(np.array([[x1, y1, x2, y2]], dtype=np.float64))
    return maps, gts


def reference_boxes(maps: np.ndarray, thresholds: np.ndarray, largest: bool) -> List[List[List[List[int]]]]:
    """Boxes per map and threshold (x2/y2 exclusive) with one cv2 pass each, as wsolevaluation does."""
    out = []
    for scoremap in maps:
        image = (scoremap * 255).astype(np.uint8)
        per_threshold = []
        for t in thresholds:
            _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            if largest and len(contours):
                contours = [max(contours, key=cv2.contourArea)]
            boxes = []
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                boxes.append([x, y, x + w, y + h])
            per_threshold.append(boxes)
        out.append(per_threshold)
    return out


def reference_counts(boxes: List[List[List[List[int]]]], gts: List[np.ndarray], deltas: Tuple[int, ...]) -> np.ndarray:
    """Hit counts (D×T): a map hits at a threshold when one of its boxes has IoU >= δ with a GT box."""
    counts = np.zeros((len(deltas), len(boxes[0]) if boxes else 0), np.int64)
    for per_threshold, gt in zip(boxes, gts):
        gt_list = [tuple(float(v) for v in g) for g in gt]
        for j, found in enumerate(per_threshold):
            best = 0.0
            for b in found:
                for g in gt_list:
                    best = max(best, _iou(tuple(float(v) for v in b), g))
            for d, delta in enumerate(deltas):
                if found and best >= delta / 100:
                    counts[d, j] += 1
    return counts


def run_set(args: argparse.Namespace, kind: str, thresholds: np.ndarray, deltas: Tuple[int, ...]) -> Tuple[float, float, BoxEvaluator]:
    """Time the evaluator and the reference on one map set; raise on any mismatch."""
    rng = np.random.default_rng(args.seed)
    ev = BoxEvaluator(thresholds, deltas, mode=args.mode, workers=args.workers)
    ref = np.zeros((len(deltas), len(thresholds)), np.int64)
    t_ours = t_ref = 0.0
    done = 0
    while done < args.n:
        k = min(args.chunk, args.n - done)
        maps, gts = make_maps(rng, k, args.size, args.noise) if kind == "smooth" else make_noise_maps(rng, k, args.size)
        t0 = time.perf_counter()
        ev.accumulate(maps, gts)
        t_ours += time.perf_counter() - t0
        if not args.skip_reference:
            t0 = time.perf_counter()
            boxes = reference_boxes(maps, thresholds, args.mode == "largest")
            ref += reference_counts(boxes, gts, deltas)
            t_ref += time.perf_counter() - t0
            if args.mode == "largest":
                ours = boxes_from_maps(maps, thresholds, "largest")
                if [[b.astype(int).tolist() for b in row] for row in ours] != boxes:
                    raise SystemExit(f"MISMATCH between wsol's largest boxes and the reference on the {kind} maps")
        done += k
    if not args.skip_reference and not np.array_equal(ref, ev.num_correct):
        raise SystemExit(f"MISMATCH between the evaluator's and the reference's hit counts on the {kind} maps")
    return t_ours, t_ref, ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5794, help="number of maps (CUB test: 5794)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--interval", type=float, default=0.01, help="threshold step; thresholds = arange(0, 1, interval)")
    ap.add_argument("--noise", type=float, default=0.05, help="amplitude of the smooth noise added to the blobs")
    ap.add_argument("--mode", choices=("all", "largest"), default="all", help="all = MaxBoxAccV2 boxes, largest = MaxBoxAcc")
    ap.add_argument("--workers", type=int, default=0, help="threads for the wsol evaluator (0: torch.get_num_threads())")
    ap.add_argument("--chunk", type=int, default=256, help="maps generated and evaluated per batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-reference", action="store_true", help="time only the wsol evaluator")
    ap.add_argument("--maps", nargs="+", choices=("smooth", "noise"), default=["smooth", "noise"], help="map sets, each timed on its own")
    args = ap.parse_args()

    thresholds = np.arange(0, 1, args.interval)
    deltas = (30, 50, 70) if args.mode == "all" else (50,)
    load_before = os.getloadavg()
    warm_maps, warm_gts = make_maps(np.random.default_rng(args.seed + 1), 2, args.size, args.noise)
    t0 = time.perf_counter()
    BoxEvaluator(thresholds, deltas, mode=args.mode, workers=args.workers).accumulate(warm_maps, warm_gts)
    t_warm = time.perf_counter() - t0
    rows = [(kind, *run_set(args, kind, thresholds, deltas)) for kind in args.maps]

    print(f"maps={args.n} per set, size={args.size} thresholds={len(thresholds)} mode={args.mode} noise={args.noise} "
          f"workers={rows[0][3].workers} cv2={cv2.__version__}")
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"evaluator start-up (numba compile or cache load, 2 maps, not in the timings below): {t_warm:.2f} s")
    print(f"{'maps':<8} {'wsol s':>9} {'ms/map':>8} {'loop s':>9} {'ms/map':>8} {'loop/wsol':>10}  MaxBoxAcc (mean over δ)")
    for kind, t_ours, t_ref, ev in rows:
        ref_cols = f"{t_ref:9.2f} {t_ref / args.n * 1e3:8.3f} {t_ref / t_ours:9.2f}x" if not args.skip_reference else f"{'-':>9} {'-':>8} {'-':>10}"
        print(f"{kind:<8} {t_ours:9.2f} {t_ours / args.n * 1e3:8.3f} {ref_cols}  {ev.compute().max_box_acc():.2f}")
    if not args.skip_reference:
        print("identical hit counts" + (" and identical boxes" if args.mode == "largest" else "") + " on every set")

if __name__ == "__main__":
    main()
