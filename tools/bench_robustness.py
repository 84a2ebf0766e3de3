"""Bench: our AutoAttack ladder vs plain pyautoattack, and the incremental vs independent ε sweep.

Models on seeded CIFAR-sized (3×32×32) data, nothing downloaded:

* ``linear``: a hand-built matched-filter linear classifier; class c is 0.5 + a_c·t_c + noise for a
  ±1 template t_c, with a margin a_c that grows with c, so robustness falls off slowly over 0..8/255
  at different rates per class.
* ``natural``: a tiny conv net trained naturally (cross-entropy, fixed seed, a few seconds) on the
  same kind of task with weaker templates; like a naturally trained CIFAR model it loses most of its
  accuracy within the first few /255.
* ``robust`` (``--models``): the same net, fine-tuned on PGD examples at 3/255 after its natural
  steps; it keeps more of its accuracy over the first /255 (how far is in the output).

(a) runs the ladder at 8/255 on the linear model, ``--repeats`` times, alternating whether ours or plain
pyautoattack goes first, and gives the median overhead; (b) sweeps ε = 0..8/255 on each model with each
sweep setting (a ladder, optionally ``/r`` for r restarts), once incrementally (each ε attacks only the points robust at the previous one) and
once as nine independent runs, and prints per ε the points attacked and the CPU seconds, the
speed-up, its ceiling (independent attacked / incremental attacked) and the largest per-class
difference between the two.

    PYTHONPATH=. python tools/bench_robustness.py [--n 256] [--ladder standard] [--n-iter 20] [--n-queries 500]  (AutoAttack proper: 100 / 5000)
        [--models linear,natural,robust] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attacks.adversarial import pgd_attack
from wsol.attacks.autoattack import resolve_ladder, run_ladder
from wsol.attacks.pgd_eval import SweepResult, epsilon_sweep
from wsol.metrics.robustness import linear_linf_robust, per_class_accuracy

SPEED_UP_TARGET = 3.0


def make_problem(n: int, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The matched-filter linear model and ``n`` test images with labels."""
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


def make_natural_problem(n: int, seed: int, n_train: int = 2048, steps: int = 150, adversarial_eps: float = 0.0,
                         ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained on seeded template images (amplitude 0.018 + 0.001·c, noise 0.1), and ``n`` test images:
    naturally, or with ``adversarial_eps`` > 0 naturally and then as long on PGD examples (3 steps of ε/2 from a random
    start; Madry et al.'s training), which keeps much of its accuracy over the sweep as robust models do."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 2, (10, 3, 32, 32), generator=g).float() * 2 - 1
    amplitude = 0.018 + 0.001 * torch.arange(10)

    def draw(m: int) -> Tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (m,), generator=g)
        x = 0.5 + amplitude[y, None, None, None] * templates[y] + 0.1 * torch.randn(m, 3, 32, 32, generator=g)
        return x.clamp(0, 1), y

    x_train, y_train = draw(n_train)
    x, y = draw(n)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    for step in range(2 * steps if adversarial_eps > 0 else steps):
        batch = torch.randint(0, n_train, (128,), generator=g)
        inputs = x_train[batch]
        if adversarial_eps > 0 and step >= steps:
            inputs = pgd_attack(model, inputs, y_train[batch], adversarial_eps, adversarial_eps / 2, 3, generator=g)
        loss = F.cross_entropy(model(inputs), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), x, y


class _Clock:
    """Wall and process CPU time since construction (CPU time is the fairer figure on a shared machine;
    on CUDA only wall time means anything, so the queue is drained before each reading)."""

    def __init__(self) -> None:
        _sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        _sync()
        return time.perf_counter() - self.wall, time.process_time() - self.cpu

    def seconds(self) -> float:
        """The figure the comparisons use: CPU time on the CPU, wall time on CUDA."""
        wall, cpu = self.read()
        return wall if _on_cuda() else cpu


def _on_cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _unit() -> str:
    return "wall" if _on_cuda() else "CPU"


def _sync() -> None:
    if _on_cuda():
        torch.cuda.synchronize()


def _logged_ladder(model: nn.Module, ladder: str, log: Dict[int, dict], **kw) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """``ladder_attack`` that records per ε the CPU seconds and each rung's points attacked and wall seconds."""

    def attack(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        clock = _Clock()
        res = run_ladder(model, x, y, eps=eps, ladder=ladder, **kw)
        log[round(eps * 255)] = {"cpu": clock.seconds(), "rungs": [(r.attack, r.attacked, r.minutes * 60) for r in res.rungs]}
        return res.x_adv

    return attack


def sweep_comparison(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ladder: str,
                     exact: Optional[Callable[[float], torch.Tensor]] = None, **kw) -> float:
    """Print the incremental vs independent sweep of one model with one ladder; returns the CPU speed-up.
    ``exact(eps)``, where the true robustness is computable, says how many points each scheme wrongly calls robust."""
    grid = [k / 255 for k in range(9)]
    runs: List[Tuple[SweepResult, Dict[int, dict], float]] = []
    for incremental in (True, False):
        log: Dict[int, dict] = {}
        clock = _Clock()
        res = epsilon_sweep(model, _logged_ladder(model, ladder, log, **kw), x, y, grid, incremental=incremental)
        runs.append((res, log, clock.seconds()))
    (inc, inc_log, t_inc), (ind, ind_log, t_ind) = runs
    restarts = kw.get("n_restarts") or "pyautoattack's default"
    print(f"(b) {name}, ladder {ladder}, restarts {restarts}: clean {float(inc.robust[0].float().mean()):.3f}")
    print(f"    ε/255 robust | incremental: attacked {_unit()} s  rungs (attacked, wall s) | independent: attacked {_unit()} s")
    for k in range(1, len(grid)):
        a, b = inc_log.get(k), ind_log[k]
        rungs = " ".join(f"{r}:{m}/{s:.2f}" for r, m, s in a["rungs"]) if a else "-"
        print(f"    {k:5d} {float(inc.robust[k].float().mean()):6.3f} | {inc.attacked[k]:8d} {a['cpu'] if a else 0.0:6.2f}  {rungs:30s}"
              f" | {ind.attacked[k]:8d} {b['cpu']:6.2f}")
    diff = (per_class_accuracy(inc.robust.cpu(), y.cpu(), 10) - per_class_accuracy(ind.robust.cpu(), y.cpu(), 10)).abs().nan_to_num().max()
    speed_up, ceiling = t_ind / t_inc, sum(ind.attacked) / max(sum(inc.attacked), 1)
    print(f"    {_unit()} incremental {t_inc:.2f} s vs independent {t_ind:.2f} s: speed-up {speed_up:.2f}x "
          f"(target {SPEED_UP_TARGET:g}x {'met' if speed_up >= SPEED_UP_TARGET else 'NOT met'}); "
          f"ceiling = attacked {sum(ind.attacked)} / {sum(inc.attacked)} = {ceiling:.2f}x; "
          f"largest per-class difference {float(diff):.4f}; ε = 1/255 is {100 * inc_log.get(1, {'cpu': 0.0})['cpu'] / t_inc:.0f} % of the incremental time")
    first = ind_log[1]["cpu"]
    print(f"    bound on any upward sweep: at ε = 1/255 it attacks the points the independent run attacks ({inc.attacked[1]} vs "
          f"{ind.attacked[1]}), with the same attack, so it cannot beat independent total / independent ε = 1/255 = "
          f"{t_ind:.2f} / {first:.2f} s = {t_ind / max(first, 1e-9):.2f}x")
    only_inc, only_ind = (inc.robust & ~ind.robust).sum().item(), (ind.robust & ~inc.robust).sum().item()
    print(f"    (point, ε) pairs robust under one scheme only: incremental {only_inc}, independent {only_ind}")
    if exact is not None:
        truth = torch.stack([exact(e) for e in grid]).to(inc.robust.device)
        for label, res in (("incremental", inc), ("independent", ind)):
            missed, impossible = (res.robust & ~truth).sum().item(), (~res.robust & truth).sum().item()
            print(f"    exact check, {label}: {missed} (point, ε) pairs called robust that the exact attack breaks, "
                  f"{impossible} broken that are exactly robust (must be 0)")
    return speed_up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ladder", default="standard")
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--n-queries", type=int, default=500)
    ap.add_argument("--sweeps", default="apgd-ce;apgd-ce/1;apgd-ce,apgd-t",
                    help="';'-separated ε-sweep settings for (b): a ladder, '/r' for r restarts (apgd-ce is `wsol robustness per-class`'s default)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="runs of (a), alternating which of the two goes first; the median overhead is the figure")
    ap.add_argument("--models", default="linear,natural",
                    help="comma list of linear, natural and robust (the CNN trained on PGD examples at 3/255, below its templates' amplitude) for (b)")
    ap.add_argument("--device", default="cpu", help="cpu (times are process CPU seconds) or cuda (wall seconds)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    model, x, y = (t.to(device) for t in make_problem(args.n, args.seed))
    knobs = dict(n_iter=args.n_iter, n_queries=args.n_queries)
    eps = 8 / 255

    from pyautoattack import AutoAttack

    names = resolve_ladder(args.ladder)
    version = args.ladder if args.ladder in ("standard", "plus") else "custom"

    def plain_run() -> Tuple[float, Tuple[float, float]]:
        plain = AutoAttack(model, attacks=None if version != "custom" else list(names), device=device,
                           eps=eps, norm="Linf", seed=args.seed, version=version)
        for obj in (plain.apgd, plain.apgd_targeted, plain.fab):
            obj.n_iter = args.n_iter
        plain.square.n_queries = args.n_queries
        clock = _Clock()
        x_adv, _ = plain.run_standard_evaluation(x, y, batch_size=args.batch_size)
        elapsed = clock.read()
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean()), elapsed

    def our_run() -> Tuple[Any, Tuple[float, float]]:
        clock = _Clock()
        res = run_ladder(model, x, y, eps=eps, ladder=args.ladder, seed=args.seed, batch_size=args.batch_size, **knobs)
        return res, clock.read()

    unit = int(not _on_cuda())  # the CPU reading on a CPU, wall seconds on CUDA
    overheads = []
    for repeat in range(args.repeats):
        first, second = (plain_run, our_run) if repeat % 2 == 0 else (our_run, plain_run)  # alternate who runs first
        a, b = first(), second()
        (plain_acc, t_plain), (ours, t_ours) = (a, b) if first is plain_run else (b, a)
        overheads.append(100 * (t_ours[unit] / t_plain[unit] - 1))
        if repeat == 0:
            print(f"(a) ladder {args.ladder} at 8/255 on {args.n} images: clean {ours.clean_accuracy:.4f}")
            for r in ours.rungs:
                print(f"    {r.attack:9s} acc {r.robust_accuracy:.4f} delta {r.delta:+.4f} attacked {r.attacked:4d} {r.minutes * 60:7.2f} s")
        print(f"    run {repeat + 1} ({'plain' if first is plain_run else 'ours'} first): robust accuracy ours {ours.robust_accuracy:.4f} "
              f"vs pyautoattack {plain_acc:.4f}; wall/CPU s ours {t_ours[0]:.2f}/{t_ours[1]:.2f} vs plain {t_plain[0]:.2f}/{t_plain[1]:.2f}, "
              f"overhead ({_unit()}) {overheads[-1]:+.1f} %")
    print(f"    overhead ({_unit()}), median of {len(overheads)}: {statistics.median(overheads):+.1f} % (target ≤ 5 %)")

    problems = {"linear": (model, x, y)}
    unknown = set(args.models.split(",")) - {"linear", "natural", "robust"}
    if unknown:
        ap.error(f"unknown --models {', '.join(sorted(unknown))}: use linear, natural, robust")
    for name, eps_train in (("natural", 0.0), ("robust", 3 / 255)):
        if name in args.models.split(","):
            clock = _Clock()
            problems[name] = tuple(t.to(device) for t in make_natural_problem(args.n, args.seed, adversarial_eps=eps_train))
            print(f"{name} CNN trained in {clock.read()[1]:.1f} s CPU")
    for name in args.models.split(","):
        m, xs, ys = problems[name]
        for setting in args.sweeps.split(";"):
            ladder, _, restarts = setting.partition("/")
            extra = {"n_restarts": int(restarts)} if restarts else {}
            exact = (lambda e, m=m, xs=xs, ys=ys: linear_linf_robust(m[1].weight, m[1].bias, xs, ys, e)) if name == "linear" else None
            sweep_comparison(name, m, xs, ys, ladder, exact=exact, seed=args.seed, batch_size=args.batch_size, **knobs, **extra)


if __name__ == "__main__":
    main()
