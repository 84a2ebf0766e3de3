"""Benchmark: attribution throughput (maps/s) for `grad` and `ig` on ResNet-50, side by side.

Builds a randomly initialized ResNet-50 (no download) and a batch of random 224×224 images, then
times `wsol.attribution.attribute` with `grad` and with `ig` (``--ig-steps`` steps, trapezoid rule),
in eval mode, after ``--warmup`` untimed calls each. Prints ms/batch, maps/s and the ig/grad time ratio.
On CUDA, ``--bf16`` runs the model under bf16 autocast and ``--channels-last`` converts it.

Run: ``python tools/bench_attribution.py --batch-size 16 --repeats 2``.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from wsol.attribution import attribute
from wsol.models import build_model


def _time(fn, repeats: int, device: torch.device, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--internal-batch-size", type=int, default=64, help="IG path points per forward pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 200).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(args.batch_size, 3, args.size, args.size, device=device)
    target = torch.randint(0, 200, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def grad() -> torch.Tensor:
        with autocast:
            return attribute(model, x, target, "grad")

    def ig() -> torch.Tensor:
        with autocast:
            return attribute(model, x, target, "ig", n_steps=args.ig_steps, internal_batch_size=args.internal_batch_size)

    t_grad = _time(grad, args.repeats, device, args.warmup)
    t_ig = _time(ig, args.repeats, device, args.warmup)
    n = args.batch_size
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {device}")
    print(f"{args.arch} batch {n} at {args.size}px, bf16={args.bf16}, channels_last={args.channels_last}")
    print(f"grad: {t_grad * 1000:.0f} ms/batch, {n / t_grad:.2f} maps/s")
    print(f"ig ({args.ig_steps} steps): {t_ig * 1000:.0f} ms/batch, {n / t_ig:.2f} maps/s")
    print(f"ratio ig/grad time: {t_ig / t_grad:.1f}x")


if __name__ == "__main__":
    main()
