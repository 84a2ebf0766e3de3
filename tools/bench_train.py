"""Time one training step of natural, PGD-10, wsol's ART and a literal Algorithm-1 ART reference.

All four run on the same model and batch, in train mode, with an SGD step. The reference is written
plainly: a ``copy.deepcopy`` of the model with every ReLU replaced by ``nn.Softplus(beta)`` made at
every step (so it sees the current weights), and g^y, g^{i*} from two separate
``torch.autograd.grad(create_graph=True)`` calls. Before timing, the ART loss of wsol and of the
reference are computed from the same weights and the same random start and must agree within 1e-4.

    python tools/bench_train.py --arch wrn-16-2 --batch-size 32 --steps 5
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsol.config import ArtConfig, AttackConfig, TrainConfig  # noqa: E402
from wsol.models import build_model  # noqa: E402
from wsol.models.activations import SwitchableReLU  # noqa: E402
from wsol.train.methods import art_step, natural_step, pgd_step  # noqa: E402


def softplus_copy(model: nn.Module, beta: float) -> nn.Module:
    """A deep copy of ``model`` whose ReLUs are ``nn.Softplus(beta)`` modules."""
    clone = copy.deepcopy(model)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, (nn.ReLU, SwitchableReLU)):
                setattr(module, name, nn.Softplus(beta=beta))
            else:
                swap(child)

    swap(clone)
    return clone


def reference_l_attr(sp_model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Literal L_attr: one softplus forward, two separate create_graph gradient calls."""
    logits = sp_model(x)
    masked = logits.detach().clone()
    masked[torch.arange(len(y)), y] = float("-inf")
    istar = masked.argmax(1)
    g_y = torch.autograd.grad(logits[torch.arange(len(y)), y].sum(), x, create_graph=True, retain_graph=True)[0]
    g_i = torch.autograd.grad(logits[torch.arange(len(y)), istar].sum(), x, create_graph=True)[0]
    a, p, n = x.flatten(1), g_y.flatten(1), g_i.flatten(1)
    d_p = 1 - F.cosine_similarity(p, a, dim=1, eps=1e-12)
    d_n = 1 - F.cosine_similarity(n, a, dim=1, eps=1e-12)
    return torch.log1p(torch.exp(-(d_n - d_p)))


def reference_art_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ArtConfig, noise: torch.Tensor):
    """Algorithm 1 written plainly; returns (loss, softplus copy) so the caller can move its grads."""
    sp_model = softplus_copy(model, cfg.beta)
    x_adv = (x + cfg.eps * noise).clamp(0, 1)
    for _ in range(cfg.steps):
        x_adv = x_adv.detach().requires_grad_(True)
        grad = torch.autograd.grad(reference_l_attr(sp_model, x_adv, y).sum(), x_adv)[0]
        x_adv = x_adv.detach() + cfg.step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0, 1)
    x_adv = x_adv.detach()
    ce = F.cross_entropy(model(x_adv), y)
    x_req = x_adv.clone().requires_grad_(True)
    loss = ce + cfg.lam * reference_l_attr(sp_model, x_req, y).mean()
    return loss, sp_model


class RssPeak:
    """Peak resident memory of this process while the block runs (sampled from /proc every 2 ms)."""

    def __enter__(self) -> "RssPeak":
        self.peak = self.base = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())


def _cpu_peaks(args: argparse.Namespace) -> Dict[str, float]:
    """Working-memory peak per method, measured in a child run where glibc unmaps freed tensors."""
    cmd = [sys.executable, __file__, "--memory-only", "--device", "cpu", "--arch", args.arch,
           "--batch-size", str(args.batch_size), "--size", str(args.size), "--classes", str(args.classes),
           "--threads", str(args.threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="wrn-16-2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed iterations per method")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and batch (CUDA only)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) for every method")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |ART loss (wsol) - reference| accepted before timing (cuDNN's channels-last kernels sum in other orders)")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(args.arch, args.classes, input_size=args.size).to(device).train()
    x = torch.rand(args.batch_size, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    if args.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    noise = torch.rand_like(x) * 2 - 1
    config = TrainConfig(arch=args.arch, method="art", pgd=AttackConfig(eps=8 / 255, step_size=2 / 255, steps=10))
    art = config.art
    batched_config = dataclasses.replace(config, art=dataclasses.replace(config.art, batched=True))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    state = copy.deepcopy(model.state_dict())
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    # The equality check runs in full fp32: TF32 convolutions (on by default on CUDA) round to a 10-bit
    # mantissa, and the two implementations sum in different orders.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    ref = reference_art_loss(model, x, y, art, noise)[0].item()
    batched_ok = True
    for name, cfg in (("wsol", config), ("wsol batched", batched_config)):
        model.load_state_dict(state)
        ours = art_step(model, x, y, cfg, init_delta=art.eps * noise).loss.item()
        diff = abs(ours - ref)
        print(f"ART loss: {name} {ours:.6f}  literal reference {ref:.6f}  |diff| {diff:.2e}")
        if diff > args.tolerance and name == "wsol":
            raise SystemExit(f"ART loss mismatch ({name}) {diff:.2e} > {args.tolerance:g}")
        if diff > args.tolerance:
            batched_ok = False
            print(f"WARNING: the batched option differs from the reference by {diff:.2e} > {args.tolerance:g}; not timed")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    model.load_state_dict(state)

    def wsol_step(fn: Callable, cfg: TrainConfig = config) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and cuda):
                loss = fn(model, x, y, cfg, init_delta=art.eps * noise).loss
            loss.backward()
            opt.step()

        return run

    def reference_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and cuda):
            loss, sp_model = reference_art_loss(model, x, y, art, noise)
        loss.backward()
        for p, q in zip(model.parameters(), sp_model.parameters()):
            if q.grad is not None:
                p.grad = q.grad if p.grad is None else p.grad + q.grad
        opt.step()

    methods: Dict[str, Callable[[], None]] = {
        "natural": wsol_step(natural_step),
        "pgd-10": wsol_step(pgd_step),
        "art (wsol)": wsol_step(art_step),
        "art (wsol, batched)": wsol_step(art_step, batched_config),
        "art (literal reference)": reference_step,
    }
    if not batched_ok:
        del methods["art (wsol, batched)"]
    for name, fn in methods.items():
        for _ in range(args.warmup):
            fn()
    if args.memory_only:  # one call per method; RSS tracks live tensors under MALLOC_MMAP_THRESHOLD_
        peaks = {}
        for name, fn in methods.items():
            with RssPeak() as mem:
                fn()
            peaks[name] = (mem.peak - mem.base) / 2**20
        print(json.dumps(peaks))
        return
    results: Dict[str, list] = {name: [] for name in methods}
    cuda_peaks: Dict[str, float] = {}
    for _ in range(args.steps):  # interleaved, so background load hits every method alike
        for name, fn in methods.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
                cuda_peaks[name] = torch.cuda.max_memory_allocated() / 2**20
            results[name].append(time.perf_counter() - start)
    peaks = cuda_peaks if cuda else _cpu_peaks(args)
    results = {name: (sorted(times)[len(times) // 2], peaks.get(name, float("nan"))) for name, times in results.items()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"device {device}, arch {args.arch}, batch {args.batch_size}, {args.size}x{args.size}, "
          f"median of {args.steps} timed steps, threads {torch.get_num_threads()}, amp {args.amp and cuda}, "
          f"channels-last {args.channels_last and cuda}")
    mem_label = "peak CUDA MiB" if cuda else "peak extra RSS MiB"
    print(f"{'method':<26}{'ms/step':>10}{'img/s':>10}{mem_label:>20}{'x natural':>11}")
    nat = results["natural"][0]
    for name, (sec, peak) in results.items():
        print(f"{name:<26}{sec * 1e3:>10.1f}{args.batch_size / sec:>10.1f}{peak:>20.1f}{sec / nat:>11.2f}")
    speedup = results["art (literal reference)"][0] / results["art (wsol)"][0]
    print(f"ART speed-up over the literal reference: {speedup:.2f}x; process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
