"""Bench: our AutoAttack ladder vs plain pyautoattack, and the incremental vs independent ε sweep.

The model is a hand-built matched-filter linear classifier on CIFAR-sized (3×32×32) seeded data:
class c is 0.5 + a_c·t_c + noise for a ±1 template t_c, with a margin a_c that grows with c, so
robustness falls off over 0..8/255 at different rates per class. Nothing is downloaded.

    PYTHONPATH=. python tools/bench_robustness.py [--n 256] [--ladder standard] [--n-iter 20] [--n-queries 500]  (AutoAttack proper: 100 / 5000)
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from wsol.attacks.autoattack import ladder_attack, resolve_ladder, run_ladder
from wsol.attacks.pgd_eval import epsilon_sweep
from wsol.metrics.robustness import per_class_accuracy


def make_problem(n: int, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 2, (10, 3 * 32 * 32), generator=g).float() * 2 - 1
    margins = (4.0 + 0.8 * torch.arange(10)) / 255
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.5 + margins[y, None] * templates[y] + 0.3 * torch.randn(n, templates.shape[1], generator=g)
    linear = nn.Linear(templates.shape[1], 10)
    with torch.no_grad():
        linear.weight.copy_(templates)
        linear.bias.copy_(-0.5 * templates.sum(1))
    model = nn.Sequential(nn.Flatten(), linear).eval()
    return model, x.clamp(0, 1).view(n, 3, 32, 32), y


class _Clock:
    """Wall and process CPU time since construction (CPU time is the fairer figure on a shared machine)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ladder", default="standard")
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--n-queries", type=int, default=500)
    ap.add_argument("--sweep-ladder", default="apgd-ce,apgd-t", help="ladder for the ε sweep (b)")
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, x, y = make_problem(args.n, args.seed)
    knobs = dict(n_iter=args.n_iter, n_queries=args.n_queries)
    eps = 8 / 255

    from pyautoattack import AutoAttack

    names = resolve_ladder(args.ladder)
    version = args.ladder if args.ladder in ("standard", "plus") else "custom"
    plain = AutoAttack(model, attacks=None if version != "custom" else list(names), device="cpu",
                       eps=eps, norm="Linf", seed=args.seed, version=version)
    for obj in (plain.apgd, plain.apgd_targeted, plain.fab):
        obj.n_iter = args.n_iter
    plain.square.n_queries = args.n_queries
    clock = _Clock()
    x_adv, _ = plain.run_standard_evaluation(x, y, batch_size=args.batch_size)
    t_plain = clock.read()
    with torch.no_grad():
        plain_acc = float((model(x_adv).argmax(1) == y).float().mean())
    clock = _Clock()
    ours = run_ladder(model, x, y, eps=eps, ladder=args.ladder, seed=args.seed, batch_size=args.batch_size, **knobs)
    t_ours = clock.read()
    print(f"(a) ladder {args.ladder} at 8/255 on {args.n} images: clean {ours.clean_accuracy:.4f}")
    for r in ours.rungs:
        print(f"    {r.attack:9s} acc {r.robust_accuracy:.4f} delta {r.delta:+.4f} attacked {r.attacked:4d} {r.minutes * 60:7.2f} s")
    print(f"    robust accuracy ours {ours.robust_accuracy:.4f} vs pyautoattack {plain_acc:.4f}; "
          f"wall/CPU s ours {t_ours[0]:.2f}/{t_ours[1]:.2f} vs plain {t_plain[0]:.2f}/{t_plain[1]:.2f}, "
          f"overhead (CPU) {100 * (t_ours[1] / t_plain[1] - 1):+.1f} %")

    grid = [k / 255 for k in range(9)]
    attack = ladder_attack(model, args.sweep_ladder, seed=args.seed, batch_size=args.batch_size, **knobs)
    clock = _Clock()
    inc = epsilon_sweep(model, attack, x, y, grid)
    t_inc = clock.read()
    clock = _Clock()
    ind = epsilon_sweep(model, attack, x, y, grid, incremental=False)
    t_ind = clock.read()
    diff = (per_class_accuracy(inc.robust, y, 10) - per_class_accuracy(ind.robust, y, 10)).abs().nan_to_num().max()
    print(f"(b) ε sweep 0..8/255 with {args.sweep_ladder}: incremental wall/CPU {t_inc[0]:.2f}/{t_inc[1]:.2f} s "
          f"(attacked {inc.attacked}) vs independent {t_ind[0]:.2f}/{t_ind[1]:.2f} s (attacked {ind.attacked}), "
          f"speed-up (CPU) {t_ind[1] / t_inc[1]:.2f}x, "
          f"largest per-class difference {float(diff):.4f}")
    print("    per-class accuracy at 0 and 8/255:", [round(v, 3) for v in per_class_accuracy(inc.robust, y, 10)[[0, -1]].flatten().tolist()])


if __name__ == "__main__":
    main()
