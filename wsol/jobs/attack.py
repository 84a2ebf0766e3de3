"""The attack jobs: checkpoint + dataset → attacks on the explanation, one CSV row per sample.

``run_attribution_attack`` (IFIA, Ghorbani et al.) and ``run_targeted_attack`` (Dombrowski et al.)
attack n test samples drawn reproducibly from the seed. Each batch's rows are appended to
``samples.csv`` as soon as they exist; a rerun with the same arguments (kept in ``config.json``)
skips the samples already there (the batch size may change), different arguments are refused. Under ``torchrun`` each rank
attacks a strided shard of the remaining samples and rank 0 appends the gathered rows; at the end
rank 0 rewrites ``samples.csv`` sorted by sample index and writes ``summary.json``.

Summary intervals are two-sided 95% Student-t intervals of the mean (clipped to the values the metric can take) over the samples that have the
metric. The PGD accuracy is ℓ∞ PGD with cross-entropy, ε = ``pgd_eps`` (8/255) and step 2/255
(SPEC §5; Madry et al.'s CIFAR setting).

Every random draw (IFIA's random start and random steps, gradshap/smoothgrad noise, the PGD start,
the targeted attack's target) is made per sample from the seed and the sample's dataset index
(:func:`~wsol.attacks.core.sample_generators`), so a row does not depend on the batch size, the
resume point or the number of ranks.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from wsol.attacks.adversarial import pgd_attack
from wsol.attacks.attributional import IFIA_OBJECTIVES, ifia, map_options, shuffled_targets, targeted_manipulation
from wsol.attacks.core import sample_generators, uniform_noise
from wsol.attribution.common import check_choice
from wsol.errors import ConfigError, option_flag
from wsol.export.tables import csv_text
from wsol.jobs.localize import eval_dataset
from wsol.jobs.runfolder import ATTACK_CONFIG_FILE, ATTACK_RUN_FILES, CHECKPOINT_DIGEST, MAPS_FILE, SAMPLES_FILE, SUMMARY_FILE, check_checkpoint_dataset, class_names_note, config_differences, differences_text, gather, lock_run_folder, note, parse_eps, refuse_other_run, rewritten_since, same_radius, select_samples, start_over, write_json
from wsol.metrics.intervals import interval_cell, mean_interval
from wsol.metrics.ranking import check_k, input_gradient_cosine
from wsol.models import load_model
from wsol.report.attack import inert_arguments
from wsol.models.build import checkpoint_meta
from wsol.utils import distributed as dist
from wsol.utils.device import select_device
from wsol.utils.io import atomic_write_bytes, atomic_write_text, file_sha256
from wsol.utils.numbers import counted
from wsol.utils.progress import progress

DEFAULT_N_ATTRIBUTION = 1000  # test samples when --n is not given
DEFAULT_N_TARGETED = 100
DEFAULT_BETA = 50.0  # the targeted attack's constant softplus β when neither --beta nor --beta-growth is given
FREE_ON_RESUME = ("batch_size",)
"""Arguments a resumed run may change: every row is independent of how the samples are batched."""
PIXEL_ARGUMENTS = ("eps", "step_size", "pgd_eps", "pgd_step_size", "lr")
"""Arguments in pixel units, kept as typed: ``8/255`` and ``0.03137254901960784`` are the same radius, not other arguments."""


ATTRIBUTION_COLUMNS = (
    "index", "image_id", "label", "pred", "attacked", "kept_prediction", "reason", "best_step",
    "topk_intersection", "kendall", "spearman", "center_shift", "cos_x_grad", "pgd_correct",
)
TARGETED_COLUMNS = (
    "index", "image_id", "label", "pred", "target_index", "kept_prediction",
    "target_ssim", "target_pearson", "target_mse", "target_topk",
    "original_ssim", "original_pearson", "original_mse", "original_topk",
)
ATTRIBUTION_METRICS = ("topk_intersection", "kendall", "spearman", "center_shift", "cos_x_grad")
PERCENT_METRICS = ("topk_intersection", "kendall", "spearman")
TARGETED_METRICS = TARGETED_COLUMNS[6:]

BatchFn = Callable[[torch.Tensor, torch.Tensor, List[int]], Tuple[List[Dict[str, Any]], Dict[str, np.ndarray]]]
"""(images, labels, sample indices) → one row per sample and named N-first arrays for ``maps.npz``."""


@dataclass
class AttributionAttackSettings:
    """What `wsol attack attribution` does; every field is recorded in ``config.json``."""

    attribution: str = "ig"
    objective: str = "topk"
    k: int = 100
    eps: str = "8/255"
    step_size: str = "1/255"
    steps: int = 50
    beta: Optional[float] = 50.0
    ig_steps: int = 100
    preset: str = "consistent"
    n: Optional[int] = None  # None: DEFAULT_N_ATTRIBUTION, or the whole split when smaller
    seed: int = 0
    batch_size: int = 32
    split: str = "test"
    pgd_steps: int = 40
    pgd_eps: str = "8/255"
    pgd_step_size: str = "2/255"
    n_maps: int = 8

    def check(self) -> Tuple[float, float, float, float]:
        """Refuse bad arguments (one-line ConfigError) before anything is loaded or written; returns
        (eps, step size, PGD eps, PGD step size) in pixel units."""
        check_choice(self.objective, IFIA_OBJECTIVES, "IFIA objective")
        map_options(self.attribution, self.preset, self.ig_steps, None)
        _check_counts(n=self.n, steps=self.steps, ig_steps=self.ig_steps, batch_size=self.batch_size)
        _check_beta(self.beta)
        if self.pgd_steps < 0:
            raise ConfigError(f"--pgd-steps must be ≥ 0, got {self.pgd_steps}")
        return (parse_eps(self.eps), parse_eps(self.step_size, "--step-size", positive=True), parse_eps(self.pgd_eps, "--pgd-eps"),
                parse_eps(self.pgd_step_size, "--pgd-step-size", positive=self.pgd_steps > 0))


def reach_note(eps: float, step_size: float, steps: int, *, random_start: bool = False) -> Optional[str]:
    """A note when sign steps from x cannot reach the ε-ball's edge (steps × step size < ε): the attack is then
    bounded by its steps, not by ``--eps``, and runs that differ only in ``--eps`` are the same attack."""
    reach = steps * step_size
    if random_start or reach >= eps * (1 - 1e-9):
        return None
    return (f"{counted(steps, 'step')} of {step_size * 255:g}/255 move{'' if steps != 1 else 's'} a pixel by at most {reach * 255:g}/255, less than --eps {eps * 255:g}/255: "
            "--eps does not bound this attack (raise --steps or --step-size to use the whole ball)")


def _check_counts(**counts: Optional[int]) -> None:
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ConfigError(f"{option_flag(name)} must be at least 1, got {value}")


def _check_beta(beta: Optional[float]) -> None:
    if beta is not None and not (math.isfinite(beta) and beta > 0):
        raise ConfigError(f"--beta is the softplus sharpness and must be a positive number (default 50), got {beta}")


@dataclass
class TargetedAttackSettings:
    """What `wsol attack targeted` does. Each sample's target is the next sample of a seeded cycle through
    the n samples (or image ``target_index`` of the split for all), whatever the batches."""

    attribution: str = "grad"
    eps: str = "8/255"
    lr: str = "1/255"
    steps: int = 100
    gamma: float = 1e3
    beta: Optional[float] = None  # None: DEFAULT_BETA, unless beta_growth sets β
    beta_growth: Optional[str] = None  # "B0:B1": β rises geometrically from B0 to B1 over the iterations
    k: int = 100
    ig_steps: int = 30
    target_index: Optional[int] = None
    n: Optional[int] = None  # None: DEFAULT_N_TARGETED, or the whole split when smaller
    seed: int = 0
    batch_size: int = 32
    split: str = "test"
    n_maps: int = 8

    def __post_init__(self) -> None:
        if self.beta is None and self.beta_growth is None:
            self.beta = DEFAULT_BETA

    def check(self) -> Tuple[float, float]:
        """Refuse bad arguments before anything is loaded or written; returns (eps, lr) in pixel units."""
        map_options(self.attribution, "consistent", self.ig_steps, None)
        _check_counts(n=self.n, steps=self.steps, ig_steps=self.ig_steps, batch_size=self.batch_size)
        if self.beta is not None and self.beta_growth is not None:
            raise ConfigError(f"--beta {self.beta:g} and --beta-growth {self.beta_growth} both set the softplus β; keep --beta for a constant β "
                              "or --beta-growth for one rising over the iterations, not both")
        _check_beta(self.beta)
        self.beta_range()
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ConfigError(f"--gamma weighs the output-keeping term and must be a number ≥ 0, got {self.gamma}")
        if self.target_index is not None and self.target_index < 0:
            raise ConfigError(f"--target-index is an image index of --split and must be ≥ 0, got {self.target_index}")
        return parse_eps(self.eps), parse_eps(self.lr, "--lr", positive=True)

    def beta_range(self) -> Optional[Tuple[float, float]]:
        """(β₀, β₁) of ``--beta-growth B0:B1``, or None for the constant ``--beta``."""
        if self.beta_growth is None:
            return None
        parts = self.beta_growth.split(":")
        try:
            lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            lo = hi = math.nan
        if not all(math.isfinite(b) and b > 0 for b in (lo, hi)):
            raise ConfigError(f"--beta-growth takes two positive numbers B0:B1 (e.g. 10:100, β rising from B0 to B1), got {self.beta_growth!r}")
        return lo, hi


def _read_rows(path: Path, columns: Sequence[str]) -> List[Dict[str, str]]:
    """Complete rows of a samples CSV (an interrupted last line is dropped); [] if there is none."""
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if list(row) == list(columns) and all(row[c] is not None for c in columns) and None not in row:
            rows.append(row)
    return rows


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)
        f.flush()


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


METRIC_RANGES: Dict[str, Tuple[float, float]] = {
    "topk_intersection": (0.0, 100.0), "kendall": (-100.0, 100.0), "spearman": (-100.0, 100.0), "center_shift": (0.0, math.inf),
    "cos_x_grad": (-1.0, 1.0), "target_ssim": (-1.0, 1.0), "target_pearson": (-1.0, 1.0), "target_mse": (0.0, math.inf),
    "target_topk": (0.0, 1.0), "original_ssim": (-1.0, 1.0), "original_pearson": (-1.0, 1.0), "original_mse": (0.0, math.inf),
    "original_topk": (0.0, 1.0),
}
"""The values each summary metric can take (percent for IN, K and Spearman): its interval is clipped to them."""
INTERVAL_TEXT = "two-sided 95% Student-t interval of the mean, clipped to the values the metric can take"
ATTRIBUTION_UNITS = {"natural_accuracy": "% of the samples", "pgd_accuracy": "% of the samples",
                     **{name: "% (samples.csv: a fraction)" for name in PERCENT_METRICS},
                     "center_shift": "pixels of the model input", "cos_x_grad": "cosine, -1 to 1"}
TARGETED_UNITS = {f"{side}_{m}": unit for side in ("target", "original") for m, unit in (
    ("ssim", "fraction, -1 to 1"), ("pearson", "fraction, -1 to 1"), ("mse", "between the two maps each scaled to mean 1"),
    ("topk", "fraction of the top k shared, 0 to 1"))}
"""What each number of a summary is in: ``summary.json`` carries it as ``units``, so the file explains itself."""


def summary_line(summary: Dict[str, Any], out: Path) -> str:
    """The one line the CLI prints after a run: files, counts, the accuracies and each metric's mean, interval and n,
    with the unit ``summary.json`` gives it where that is percent or pixels (IN and K read 54.28 %, as in Table 1)."""
    units = summary.get("units", {})
    marks = {name: " %" if unit.startswith("%") else " px" if unit.startswith("pixels") else "" for name, unit in units.items()}
    shown = [f"{name} {summary[name]:.2f}{marks.get(name, '')}" for name in ("natural_accuracy", "pgd_accuracy") if summary.get(name) is not None]
    for name, stats in summary["metrics"].items():
        if not stats["n"]:
            shown.append(f"{name} – (no sample has it)")
        else:
            ci = interval_cell(stats)
            shown.append(f"{name} {stats['mean']:.4g}{marks.get(name, '')} {f'{ci:.4g}' if ci.defined else '(no interval)'} n={stats['n']}")
    attacked = f", {summary['attacked']} attacked" if "attacked" in summary else ""
    return f"wrote {out / SAMPLES_FILE} and {out / SUMMARY_FILE} ({counted(summary['total'], 'sample')}{attacked}); " + ", ".join(shown)


class _Run:
    """The shared loop: lock, config check, resume, shard, append per batch, merge, maps."""

    def __init__(self, out: Path, config: Dict[str, Any], columns: Sequence[str]) -> None:
        self.out, self.config, self.columns = Path(out), config, list(columns)
        self.rewritten = False
        self.notes: List[Optional[str]] = []  # about the arguments: printed once the folder is ours, never before an error

    def check_config(self) -> None:
        """Refuse other arguments into a folder that holds results (a folder without rows is reused); rows of the same
        checkpoint file rewritten since (its digest changed) are not this model's: the run starts over. Otherwise a
        resumed run keeps the folder's config: the arguments a rerun may change (``--batch-size``, another spelling of ε,
        an argument without effect such as ``--ig-steps`` under ``grad``) change no row, so ``config.json`` and the
        summary still say what produced the rows, not what the last rerun typed."""
        import json

        path = self.out / ATTACK_CONFIG_FILE
        if path.is_file() and _read_rows(self.out / SAMPLES_FILE, self.columns):
            old = json.loads(path.read_text())
            inert = inert_arguments(old) & inert_arguments(self.config)
            diffs = [d for d in config_differences(old, self.config)
                     if d not in FREE_ON_RESUME and d != CHECKPOINT_DIGEST and d not in inert
                     and not (d in PIXEL_ARGUMENTS and same_radius(old.get(d), self.config.get(d)))]
            if diffs:  # named without those the folder's run did not use (its --pgd-eps under --pgd-steps 0): the cause is the rest
                named = [d for d in diffs if d not in inert_arguments(old)] or diffs
                raise ConfigError(f"{self.out} holds a run with other arguments ({differences_text(named, old, self.config)}); use another --out or the same arguments")
            if rewritten_since(old, self.config):
                self.rewritten = True
            else:
                self.config = {**old, CHECKPOINT_DIGEST: self.config[CHECKPOINT_DIGEST]}

    def execute(self, model: nn.Module, data: Any, indices: List[int], batch_size: int, n_maps: int, fn: BatchFn, desc: str, device: torch.device,
                summarize: Callable[[List[Dict[str, str]]], Dict[str, Any]], after_batch: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
        """Attack the samples not done yet under the folder's lock, then write ``summarize(all rows)`` as the summary (rank 0)."""
        with lock_run_folder(self.out):
            dist.mark_work_started()
            for text in self.notes:
                note(text)
            rows = self._attack(model, data, indices, batch_size, n_maps, fn, desc, device, after_batch)
            summary = summarize(rows) if dist.is_main_process() else {}
            write_json(self.out / SUMMARY_FILE, summary)
        dist.barrier()
        return summary

    def _attack(self, model: nn.Module, data: Any, indices: List[int], batch_size: int, n_maps: int, fn: BatchFn, desc: str, device: torch.device,
                after_batch: Optional[Callable[[int], None]]) -> List[Dict[str, str]]:
        samples = self.out / SAMPLES_FILE
        done: List[Dict[str, str]] = []
        if dist.is_main_process():
            if self.rewritten:  # before config.json names the new checkpoint: a kill in between left the old model's rows
                stale = [self.out / name for name in ATTACK_RUN_FILES if name != ATTACK_CONFIG_FILE]  # under the new digest,
                start_over(self.out, "rows", self.config["checkpoint"], stale)  # and the rerun resumed them as this model's
            done = _read_rows(samples, self.columns)
            if not done:  # maps of a run that wrote no row (perhaps with other arguments) are not this run's
                (self.out / MAPS_FILE).unlink(missing_ok=True)
            write_json(self.out / ATTACK_CONFIG_FILE, self.config)
            atomic_write_text(samples, csv_text(done, self.columns, header=True))
        done_ids = {int(r["index"]) for r in dist.gather_objects(done)[0]}
        remaining = [i for i in indices if i not in done_ids]
        world, rank = dist.world_size(), dist.rank()
        mine = remaining[rank::world]
        n_batches = math.ceil(math.ceil(len(remaining) / world) / batch_size) if remaining else 0
        show = set(indices[:n_maps])
        for b in progress(range(n_batches), desc=f"{desc} batches ({len(indices) - len(remaining)} of {len(indices)} samples done before)", each=True):
            chunk = mine[b * batch_size:(b + 1) * batch_size]
            rows: List[Dict[str, Any]] = []
            maps: Dict[int, Dict[str, np.ndarray]] = {}
            if chunk:
                items = [data[i] for i in chunk]
                x = torch.stack([s.image for s in items]).to(device)
                y = torch.tensor([int(s.label) for s in items], device=device)
                rows, batch_maps = fn(x, y, chunk)
                for j, i in enumerate(chunk):
                    rows[j] = {"index": i, "image_id": int(items[j].image_id), "label": int(items[j].label), **rows[j]}
                    if i in show:
                        maps[i] = {k: v[j] for k, v in batch_maps.items()}
            rows = sorted(gather(rows), key=lambda r: r["index"])
            maps = {i: m for part in dist.gather_objects(maps) for i, m in part.items()}
            if dist.is_main_process() and maps:
                self._save_maps(maps)  # before the rows: a kill between the two recomputes these samples, maps included
            if dist.is_main_process() and rows:
                _append(samples, csv_text(rows, self.columns, header=False))
            if after_batch is not None:
                after_batch(b)
        final: List[Dict[str, str]] = []
        if dist.is_main_process():
            final = sorted(_read_rows(samples, self.columns), key=lambda r: int(r["index"]))
            atomic_write_text(samples, csv_text(final, self.columns, header=True))
        return final

    def _save_maps(self, maps: Dict[int, Dict[str, np.ndarray]]) -> None:
        """Merge one batch's ``maps`` into ``maps.npz`` (rewritten atomically), so the maps of the samples a
        killed run finished survive its resume, which does not attack those samples again."""
        path = self.out / MAPS_FILE
        merged: Dict[int, Dict[str, np.ndarray]] = {}
        if path.is_file():
            with np.load(path) as old:
                for j, i in enumerate(old["index"].tolist()):
                    merged[i] = {k: old[k][j] for k in old.files if k != "index"}
        merged.update(maps)
        keys = sorted(merged)
        arrays = {name: np.stack([merged[i][name] for i in keys]) for name in merged[keys[0]]}
        buf = io.BytesIO()
        np.savez_compressed(buf, index=np.array(keys), **arrays)
        atomic_write_bytes(path, buf.getvalue())


def _check_attack_k(k: int, side: int) -> None:
    """k must leave pixels out of the top k: with k = H·W every map's top k is the whole map (IN always 100%)."""
    check_k(k, side * side)
    if k == side * side:
        raise ConfigError(f"--k {k} takes every pixel of the {side}×{side} map, so the top-k intersection is always 100%; give --k below {k}")


def _prepare(kind: str, checkpoint: Path, dataset: str, root: Path, out: Path, s: Any, columns: Sequence[str], default_n: int,
             device: Optional[str], dataset_options: Optional[Dict[str, Any]] = None) -> tuple[nn.Module, Any, torch.device, List[int], _Run]:
    """Load the model and the split, check k and the classes, choose the samples and check the folder: nothing is written."""
    dist.init_from_env()
    refuse_other_run(out, f"{kind} attack")  # before the model and the split are loaded: that can take minutes
    dev = select_device(device)
    model = load_model(checkpoint).to(dev).eval()
    data = eval_dataset(dataset, root, s.split, model.input_size, **(dataset_options or {}))
    if data.num_classes != model.num_classes:
        raise ConfigError(f"checkpoint {checkpoint} has {model.num_classes} classes but dataset {dataset} has {data.num_classes}")
    check_checkpoint_dataset(checkpoint, dataset, list(getattr(data, "class_names", [])))
    _check_attack_k(s.k, model.input_size)
    indices = select_samples(len(data), s.n, s.seed, default=default_n)
    meta = checkpoint_meta(checkpoint)
    config = {"attack": kind, "checkpoint": str(Path(checkpoint).resolve()), CHECKPOINT_DIGEST: file_sha256(checkpoint), "dataset": dataset,
              "root": str(Path(root).resolve()), "method": meta.get("method"), "arch": meta.get("arch"), **asdict(s),
              **({"dataset_options": dataset_options} if dataset_options else {})}  # kept only when given: older folders resume
    run = _Run(out, config, columns)
    run.check_config()
    run.notes.append(class_names_note(checkpoint, dataset, list(getattr(data, "class_names", []))))
    return model, data, dev, indices, run


def run_attribution_attack(
    checkpoint: Path,
    dataset: str,
    root: Path,
    out: Path,
    settings: AttributionAttackSettings,
    device: Optional[str] = None,
    after_batch: Optional[Callable[[int], None]] = None,
    dataset_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """IFIA on n reproducibly chosen samples → ``samples.csv``, ``maps.npz``, ``summary.json`` in ``out``.

    Arguments are checked before anything is written. ``after_batch(b)`` is called after batch b's
    rows are on disk (a hook for progress and tests); ``dataset_options`` go to the loader. Returns the summary.
    """
    s = settings
    eps, step, pgd_eps, pgd_step = s.check()
    model, data, dev, indices, run = _prepare("attribution", checkpoint, dataset, root, out, s, ATTRIBUTION_COLUMNS, DEFAULT_N_ATTRIBUTION, device, dataset_options)
    run.notes.append(reach_note(eps, step, s.steps, random_start=s.preset == "official"))

    def batch(x: torch.Tensor, y: torch.Tensor, idx: List[int]) -> tuple[List[Dict[str, Any]], Dict[str, np.ndarray]]:
        result = ifia(model, x, y, objective=s.objective, attribution=s.attribution, k=s.k, eps=eps, step_size=step, steps=s.steps,
                      beta=s.beta, ig_steps=s.ig_steps, preset=s.preset, generator=sample_generators(s.seed, idx, "ifia"), return_maps=True)
        with torch.no_grad():
            pred = model(x).argmax(dim=1)
        cos = input_gradient_cosine(model, x, y).detach()
        if s.pgd_steps > 0:
            noise = uniform_noise(x.shape, sample_generators(s.seed, idx, "pgd"), x.device).to(x) * pgd_eps
            x_pgd = pgd_attack(model, x, y, pgd_eps, pgd_step, s.pgd_steps, init_delta=noise)
            with torch.no_grad():
                pgd_ok = (model(x_pgd).argmax(dim=1) == y).tolist()
        else:
            pgd_ok = [""] * len(idx)
        rows = [dict(r, pred=int(p), cos_x_grad=float(c), pgd_correct=g) for r, p, c, g in zip(result.rows(), pred.tolist(), cos.tolist(), pgd_ok)]
        maps = {"image": x.cpu().numpy(), "x_adv": result.x_adv.cpu().numpy(),
                "original_map": result.original_maps.cpu().numpy(), "attacked_map": result.attacked_maps.cpu().numpy()}
        return rows, maps

    return run.execute(model, data, indices, s.batch_size, s.n_maps, batch, f"IFIA {s.attribution}/{s.objective}", dev,
                       lambda rows: attribution_summary(rows, run.config), after_batch)


def _flag(value: str) -> bool:
    return value.strip().lower() == "true"


def attribution_summary(rows: Sequence[Dict[str, str]], config: Dict[str, Any]) -> Dict[str, Any]:
    """Counts, natural and PGD accuracy (percent) and the metric means with 95% t-intervals (IN, K, Spearman in percent)."""
    total = len(rows)
    correct = [int(r["pred"]) == int(r["label"]) for r in rows]
    attacked = [_flag(r["attacked"]) for r in rows]
    kept = [_flag(r["kept_prediction"]) for r in rows]
    out: Dict[str, Any] = {
        "total": total,
        "misclassified": total - sum(attacked),
        "attacked": sum(attacked),
        "no_step_kept": sum(a and not k for a, k in zip(attacked, kept)),
        "natural_accuracy": 100.0 * sum(correct) / max(total, 1),
        "pgd_accuracy": (100.0 * sum(_flag(r["pgd_correct"]) for r in rows) / max(total, 1)) if config.get("pgd_steps") else None,
        "interval": INTERVAL_TEXT,
        "units": ATTRIBUTION_UNITS,
        "metrics": {},
        "config": config,
    }
    for name in ATTRIBUTION_METRICS:
        scale = 100.0 if name in PERCENT_METRICS else 1.0
        stats = mean_interval([scale * _as_float(r[name]) for r in rows], bounds=METRIC_RANGES[name])
        out["metrics"][name] = stats
    return out


def run_targeted_attack(
    checkpoint: Path,
    dataset: str,
    root: Path,
    out: Path,
    settings: TargetedAttackSettings,
    device: Optional[str] = None,
    after_batch: Optional[Callable[[int], None]] = None,
    dataset_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Targeted manipulation on n reproducibly chosen samples → ``samples.csv``, ``maps.npz``, ``summary.json``."""
    s = settings
    eps, lr = s.check()
    model, data, dev, indices, run = _prepare("targeted", checkpoint, dataset, root, out, s, TARGETED_COLUMNS, DEFAULT_N_TARGETED, device, dataset_options)
    if s.target_index is not None and s.target_index >= len(data):
        raise ConfigError(f"--target-index {s.target_index} is past the {len(data)} images of the {s.split} split; give an index below {len(data)}")
    if s.target_index is None and len(indices) < 2:
        raise ConfigError("a targeted attack on one sample has no other sample to take a target from; give --n 2 or more, or --target-index")
    cycle = shuffled_targets(len(indices), torch.Generator().manual_seed(s.seed)).tolist()
    target_of = {i: (indices[t] if s.target_index is None else s.target_index) for i, t in zip(indices, cycle)}

    def batch(x: torch.Tensor, y: torch.Tensor, idx: List[int]) -> tuple[List[Dict[str, Any]], Dict[str, np.ndarray]]:
        targets = [target_of[i] for i in idx]
        goal = torch.stack([data[t].image for t in targets]).to(x)
        result = targeted_manipulation(model, x, target_images=goal, generator=sample_generators(s.seed, idx, "targeted"), attribution=s.attribution,
                                       eps=eps, steps=s.steps, lr=lr, gamma=s.gamma, beta=s.beta, beta_growth=s.beta_range(), k=s.k, ig_steps=s.ig_steps, return_maps=True)
        with torch.no_grad():
            pred = model(x).argmax(dim=1)
        rows = [dict(r, pred=int(p), target_index=t) for r, p, t in zip(result.rows(), pred.tolist(), targets)]
        maps = {"image": x.cpu().numpy(), "x_adv": result.x_adv.cpu().numpy(), "attacked_map": result.maps.cpu().numpy()}
        return rows, maps

    def summarize(rows: List[Dict[str, str]]) -> Dict[str, Any]:
        others = [r for r in rows if r["target_index"] != r["index"]]  # --target-index I makes sample I its own target: no attack to measure
        return {"total": len(rows), "kept_prediction": sum(_flag(r["kept_prediction"]) for r in rows), "own_target": len(rows) - len(others),
                "interval": f"{INTERVAL_TEXT}, over the samples whose target is another image", "units": TARGETED_UNITS, "config": run.config,
                "metrics": {m: mean_interval([_as_float(r[m]) for r in others], bounds=METRIC_RANGES[m]) for m in TARGETED_METRICS}}

    return run.execute(model, data, indices, s.batch_size, s.n_maps, batch, f"targeted {s.attribution}", dev, summarize, after_batch)


DEMO_COLUMNS = ("method", "attribution", "attacked", "IN", "IN 95% CI", "K", "K 95% CI")


def demo_attack_section(
    checkpoints: Dict[str, Path], root: Path, out: Path, n: int = 32, seed: int = 0, device: Optional[str] = None
) -> List[Dict[str, Any]]:
    """The demo's attributional-robustness rows: IFIA-grad top-k (k = 100, ε = 8/255, 10 steps of 1/255) on the
    same n `shapes` test samples for each model, IN and K in percent with 95% t-intervals.

    Each run goes to ``out/<method>`` and resumes like any attack run.
    """
    from wsol.data import build_dataset

    n = min(n, len(build_dataset("shapes", root, "test")))
    settings = AttributionAttackSettings(attribution="grad", objective="topk", k=100, steps=10, n=n, seed=seed, batch_size=n, pgd_steps=0, n_maps=4)
    rows = []
    for method, checkpoint in checkpoints.items():
        summary = run_attribution_attack(checkpoint, "shapes", root, Path(out) / method, settings, device=device)
        m = summary["metrics"]
        rows.append({
            "method": method, "attribution": "grad", "attacked": summary["attacked"],
            "IN": m["topk_intersection"]["mean"], "IN 95% CI": interval_cell(m["topk_intersection"]),
            "K": m["kendall"]["mean"], "K 95% CI": interval_cell(m["kendall"]),
        })
    return rows


__all__ = [
    "AttributionAttackSettings",
    "TargetedAttackSettings",
    "DEMO_COLUMNS",
    "attribution_summary",
    "demo_attack_section",
    "mean_interval",
    "parse_eps",
    "run_attribution_attack",
    "run_targeted_attack",
    "select_samples",
    "summary_line",
]
