"""Check: the ranking metrics and one IFIA-grad run give the same numbers on CUDA as on the CPU.

Part 1 compares Kendall τ-b, Spearman and top-k intersection of seeded random maps (with ties:
values rounded to a few levels, and exact zeros) computed on each device. Part 2 (with
``--checkpoints``) runs the demo's IFIA-grad section (k = 100, ε = 8/255, 10 steps) for each given
checkpoint on both devices and prints each model's IN and K with their intervals, and the largest
per-sample difference between the devices.

    PYTHONPATH=. python tools/check_cuda_parity.py [--checkpoints natural=A.safetensors art=B.safetensors --root SHAPES]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import torch

from wsol.metrics.ranking import kendall_tau_b, spearman, topk_intersection


def random_maps(n: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of correlated N×side×side maps; a third of them quantized to 8 levels, a third with exact zeros."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, side, side, generator=g)
    b = a + 0.3 * torch.rand(n, side, side, generator=g)
    third = n // 3
    a[:third], b[:third] = (a[:third] * 8).floor(), (b[:third] * 8).floor()
    a[third:2 * third] *= (torch.rand(third, side, side, generator=g) > 0.5)
    return a, b


def metrics_parity(device: str) -> None:
    a, b = random_maps(24, 64, 0)
    for name, fn in (("kendall", kendall_tau_b), ("spearman", spearman), ("topk", lambda u, v: topk_intersection(u, v, 100))):
        cpu, dev = fn(a, b), fn(a.to(device), b.to(device)).cpu()
        print(f"{name:9s} largest |cpu - {device}| = {float((cpu - dev).abs().max()):.3g}   first values cpu {cpu[:3].tolist()} {device} {dev[:3].tolist()}")


def attack_parity(checkpoints: dict, root: Path, device: str) -> None:
    from wsol.jobs.attack import demo_attack_section

    per_device = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dev in ("cpu", device):
            rows = demo_attack_section(checkpoints, root, Path(tmp) / dev, device=dev)
            for r in rows:
                print(f"{dev:5s} {r['method']:8s} attacked {r['attacked']} IN {r['IN']:.2f} {r['IN 95% CI']:.2f} K {r['K']:.2f} {r['K 95% CI']:.2f}")
            per_device[dev] = {m: list(csv.DictReader(open(Path(tmp) / dev / m / "samples.csv"))) for m in checkpoints}
    for method in checkpoints:
        a, b = per_device["cpu"][method], per_device[device][method]
        for key in ("topk_intersection", "kendall"):
            diffs = [abs(float(u[key]) - float(v[key])) for u, v in zip(a, b) if u[key] and v[key]]
            print(f"{method:8s} {key:17s} samples {len(diffs)} largest cpu/{device} difference {max(diffs, default=float('nan')):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--checkpoints", nargs="*", default=[], help="method=FILE pairs")
    ap.add_argument("--root", type=Path, default=None, help="the shapes folder the checkpoints were trained on")
    args = ap.parse_args()
    print(f"torch {torch.__version__}")
    metrics_parity(args.device)
    if args.checkpoints:
        attack_parity(dict(c.split("=", 1) for c in args.checkpoints), args.root, args.device)


if __name__ == "__main__":
    main()
