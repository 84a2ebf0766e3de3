"""Bench: `wsol robustness evaluate --bf16` on CUDA, the AutoAttack ladder in fp32 and under bf16 autocast side by side.

Nothing is downloaded. The script writes, in a temporary folder, a CIFAR-10 test batch of ``--n`` seeded
smooth random images labelled with the model's own fp32 predictions (so every point is attacked and the
ladder does its full work), and for a RobustBench architecture a seeded random-weight state dict with
that model's exact key names; ``pyautoattack-resnet18`` uses the real weights shipped in pyautoattack.
It then runs the robustness job once with ``bf16=True`` (fp32 first, then bf16, as the CLI does) and
prints per attack the points attacked, the robust accuracy and the seconds in each precision, and the
speed-up of bf16 over fp32.

    PYTHONPATH=. python tools/bench_bf16.py --model pyautoattack-resnet18 --n 500 --ladder standard --eps 1/255
    PYTHONPATH=. python tools/bench_bf16.py --model Wang2023Better_WRN-28-10 --n 500 --ladder apgd-ce
"""
from __future__ import annotations

import argparse
import pickle
import platform
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from wsol.jobs.robustness import RobustnessSettings, evaluate_robustness, load_eval_model
from wsol.jobs.runfolder import parse_eps
from wsol.models.robustbench import ROBUST_MODELS, PYAUTOATTACK_RESNET18


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """``n`` 3×32×32 images in [0, 1]: 4×4 seeded noise upsampled bicubically, plus fine noise (not flat, not white)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bicubic", align_corners=False)
    return (coarse + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)


def write_cifar_test_batch(root: Path, x: torch.Tensor, labels: List[int]) -> None:
    """A CIFAR-10 python tree whose test batch holds ``x`` (uint8 rows, channel-major) with ``labels``."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rows = (x * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()
    names = [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]

    def batch(data: np.ndarray, ys: List[int]) -> dict:
        return {b"labels": ys, b"data": data, b"filenames": [f"{i}.png".encode() for i in range(len(ys))], b"batch_label": b"bench"}

    files = [("batches.meta", {b"label_names": names}), ("test_batch", batch(rows, labels)),
             *[(f"data_batch_{i}", batch(rows[:1], labels[:1])) for i in range(1, 6)]]
    for name, obj in files:
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh)


def weight_files(model: str, folder: Path, seed: int) -> List[str]:
    """The shipped file for pyautoattack's ResNet-18; else a seeded random-weight state dict of the named architecture."""
    if model == PYAUTOATTACK_RESNET18:
        return []
    torch.manual_seed(seed)
    net = ROBUST_MODELS.get(model)().build()
    path = folder / f"{model}-random.pt"
    torch.save(net.state_dict(), path)
    return [str(path)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=PYAUTOATTACK_RESNET18)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--ladder", default="standard")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--n-iter", type=int, default=None)
    ap.add_argument("--eps", default="8/255", help="ℓ∞ radius, as the CLI takes it (8/255 or a decimal)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = weight_files(args.model, folder, args.seed)
        model = load_eval_model(args.model, weights, device)
        x = smooth_images(args.n, args.seed)
        with torch.no_grad():
            labels = torch.cat([model(chunk.to(device)).argmax(1).cpu() for chunk in x.split(args.batch_size)]).tolist()
        write_cifar_test_batch(folder / "cifar", x, labels)
        settings = RobustnessSettings(model=args.model, weights=weights, dataset="cifar10", n=args.n, seed=args.seed, eps=parse_eps(args.eps),
                                      ladder=args.ladder.split(","), batch_size=args.batch_size, n_iter=args.n_iter, bf16=True)
        start = time.perf_counter()
        result = evaluate_robustness(settings, folder / "cifar", folder / "run", args.device, show_progress=False, model=model)
        total = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {name}, torch {torch.__version__}; {args.model}, {args.n} images (labels = own fp32 predictions, "
          f"{len(set(labels))} classes), ladder {args.ladder} at ε {args.eps}, batch {args.batch_size}; job wall {total:.1f} s")
    fp32, bf16 = result["ladder-fp32"]["rows"], result["ladder-bf16"]["rows"]
    print("attack           | fp32: accuracy  seconds | bf16: accuracy  seconds | bf16 speed-up")
    t32 = t16 = 0.0
    for a, b in zip(fp32, bf16):
        sa, sb = 60 * (a["minutes"] or 0.0), 60 * (b["minutes"] or 0.0)
        t32, t16 = t32 + sa, t16 + sb
        print(f"{a['attack']:16s} | {a['accuracy']:14.4f} {sa:8.2f} | {b['accuracy']:14.4f} {sb:8.2f} | {_ratio(sa, sb)}")
    print(f"ladder total: fp32 {t32:.2f} s, bf16 {t16:.2f} s, speed-up {_ratio(t32, t16)}; "
          f"robust accuracy fp32 {fp32[-1]['accuracy']:.4f} vs bf16 {bf16[-1]['accuracy']:.4f}")


def _ratio(a: float, b: Optional[float]) -> str:
    return f"{a / b:.2f}×" if b else "-"


if __name__ == "__main__":
    main()
