"""Robustness jobs: the AutoAttack ladder, PGD evaluations and the per-class ε sweep on n samples of a
dataset, and a study over several models.

The n samples are drawn from the test split with the seed, then cut into chunks of ``batch_size``
positions. Each chunk is attacked on its own (the result depends only on the chunk and the seed),
and its per-sample results go to ``<kind>.rank<r>.jsonl`` as one flushed line the moment it is done.
A rerun with the same arguments skips the chunks already written; under torchrun rank r takes the
chunks r, r + world, ... and rank 0 merges every chunk in position order, so any number of processes
and any interruption give the same table. ``run.json`` holds the arguments and each weight file's SHA-256:
other arguments into the same folder are refused, and the chunks of weights rewritten since are dropped.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from wsol.attacks.autoattack import (
    LADDERS, OVERRIDE_USERS, attack_budgets, check_num_classes, ladder_attack, resolve_ladder, run_ladder, untouched_by_overrides, unused_overrides,
)
from wsol.attacks.pgd_eval import LOSSES as PGD_LOSSES
from wsol.attacks.pgd_eval import epsilon_sweep, pgd_evaluate
from wsol.errors import ConfigError, WsolError, option_flag
from wsol.export.tables import markdown_table, matrix_rows, write_csv
from wsol.jobs.runfolder import (
    ROBUSTNESS_CHUNK_FILES, ROBUSTNESS_RUN_FILE, check_checkpoint_dataset, dataset_label, class_names_note, config_differences, differences_text, lock_run_folder, note, parse_eps,
    refuse_other_run, remove_outputs, rewritten_since, same_radius, select_samples, start_over, write_json, write_text,
)
from wsol.metrics.intervals import wilson_cell
from wsol.metrics.robustness import (
    accuracy_interval, across_models_rows, attack_confusion, class_mean, ladder_rows, paired_accuracy_difference, per_class_accuracy, summary_rows,
    sweep_rows, sweep_total_row, tied_with_worst, total_drop, with_total_row,
)
from wsol.utils import distributed as dist
from wsol.utils.device import select_device
from wsol.utils.io import append_jsonl, file_sha256, json_text, read_jsonl, read_yaml
from wsol.utils.numbers import comma_list, counted, parse_number
from wsol.utils.progress import progress, step_reporter

KINDS = ("ladder", "pgd", "sweep")
STUDY_RESULT_FILE = "result.json"
"""A study's summary of one finished model, in its run folder: a model that has one is skipped."""
WEIGHTS_DIGESTS = "weights_sha256"
"""The key of ``run.json`` that holds the SHA-256 of each weight file."""
LADDER_BUDGETS, SWEEP_BUDGETS = "ladder_budgets", "sweep_budgets"
"""The keys of ``run.json`` that hold each attack's budget (iterations, restarts, queries) in the ladder and the sweep."""
REPORT_FILE, FIGURES_FOLDER = "report.md", "figures"
RUN_REPORT = (REPORT_FILE, "*.csv", FIGURES_FOLDER)
"""What :func:`write_run_report` writes into a run folder, and a study into its top folder: the report, its CSV tables and its
figures."""
DEFAULT_N = 500  # test samples when --n is not given
MINUTES_NOTE = "minutes: the attack's time summed over the chunks (over every process under torchrun): device minutes, not wall-clock."
SWEEP_NOTE = ("average delta: the mean of the classes' deltas, each class drawn counting once (the seed study's 'Average Delta "
              "(model)'); overall: the accuracy over all samples, where a class weighs by its sample count; TOTAL: the last ε minus the first.")
"""Which average each sweep table's last two columns are: they differ whenever the classes have unequal sample counts."""
SPREAD_NOTE = ("mean class accuracy, range, std: over the classes drawn, each counting once, in fractions as the accuracies; std is the "
               "population standard deviation of the class accuracies (divided by the number of classes: numpy's ddof=0), not the sample one.")
"""What the summary tables' spread columns are: a population and a sample std differ by a factor sqrt(C/(C-1)), 5 % at 10 classes."""
TIES_NOTE = ("+k tied: k more classes share the worst accuracy, and the table names the first of them in class order (its n and "
             "interval are that class's).")


# --- argument parsing: one rule each ---


DEFAULT_EPS = {"linf": "8/255", "l2": "0.5"}
"""--eps when none is given: the RobustBench CIFAR-10 budget of each norm."""
L2_SWEEP_EXAMPLE = "0,0.25,0.5,1"
"""The ℓ2 sweep grid when none is given: radii around RobustBench's CIFAR-10 ℓ2 budget of 0.5."""
DEFAULT_SWEEP = {"linf": "0:8", "l2": L2_SWEEP_EXAMPLE}
"""The default --eps-sweep per norm."""
SWEEP_COLUMN = {"linf": "eps (x/255)", "l2": "eps (l2 radius)"}
"""The ε column of the sweep tables, naming the unit of its values: x of ε = x/255 (ℓ∞) or the ℓ2 radius."""
SWEEP_AXIS = {"linf": "ε (×1/255)", "l2": "ε (ℓ2 radius, pixel units of [0, 1])"}
"""The ε axis title of the sweep figures."""


def parse_eps_sweep(text: Optional[str], norm: str = "linf") -> List[float]:
    """The sweep grid of ``norm`` (None: its default, :data:`DEFAULT_SWEEP`). ℓ∞: x in ε = x/255, written ``0:8``
    (inclusive range), ``0:8:2`` (with a step) or ``0,1,2,4,8``, integers up to 255. ℓ2: a comma list of radii in
    pixel units of [0, 1] images (``0,0.25,0.5,1``; ``64/255`` allowed); the ℓ∞ range form is refused there, since
    it would read as radii 0..8 or, in x/255, as radii of at most 0.03, neither of which an ℓ2 user means.
    Either way strictly increasing, non-negative, at least two values."""
    if norm not in DEFAULT_SWEEP:
        raise ConfigError(f"unknown norm {norm!r}: use linf or l2")
    text = DEFAULT_SWEEP[norm] if text is None else str(text).strip()
    usage = (f"an l2 sweep is a comma list of radii in pixel units of [0, 1] images, e.g. --eps-sweep {L2_SWEEP_EXAMPLE}" if norm == "l2" else
             "use a range such as 0:8, a range with a step such as 0:8:2 or a comma list such as 0,1,2,4,8 (integers, ε = x/255)")
    if not text:
        raise ConfigError(f"--eps-sweep is empty: {usage}")
    if norm == "l2":
        if ":" in text:
            raise ConfigError(f"bad --eps-sweep {text!r} for --norm l2: {usage} (the range form 0:8, x/255, is for linf)")
        values: List[float] = [parse_number(v, "--eps-sweep") for v in comma_list(text, "--eps-sweep")]
    else:
        try:
            if ":" in text:
                parts, values = _linf_range(text)
                if len(parts) == 3 and len(values) == 1 and parts[1] > parts[0]:
                    raise ConfigError(f"bad --eps-sweep {text!r}: its step {parts[2]} is larger than the range {parts[0]}:{parts[1]}, "
                                      f"which leaves {parts[0]} alone; use a smaller step, e.g. {parts[0]}:{parts[1]}:{max(1, (parts[1] - parts[0]) // 4)}")
            else:
                values = [int(p) for p in comma_list(text, "--eps-sweep")]
        except ValueError:
            raise ConfigError(f"bad --eps-sweep {text!r}: {_linf_radii_hint(text) or usage}") from None
    if not values or any(v < 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        example = L2_SWEEP_EXAMPLE if norm == "l2" else "0,2,4,8"
        raise ConfigError(f"bad --eps-sweep {text!r}: the values must be non-negative and strictly increasing, e.g. {example}")
    if norm == "linf" and values[-1] > 255:
        raise ConfigError(f"bad --eps-sweep {text!r}: the values are x in ε = x/255, so at most 255 (ε = 1); the study's grid is 0:8")
    if len(values) < 2:
        one = sweep_eps_text(values[0], norm)
        example = (f"0,{one}" if values[0] else L2_SWEEP_EXAMPLE) if norm == "l2" else f"0:{max(int(values[0]), 1)}"
        raise ConfigError(f"bad --eps-sweep {text!r}: a sweep needs at least two values, e.g. {example}; "
                          f"for one ε use 'wsol robustness evaluate --norm {norm} --eps {one}'")
    return values


def _linf_range(text: str) -> Tuple[List[int], List[int]]:
    """The parts of an ℓ∞ range ``a:b`` or ``a:b:step`` and the values it spans, both ends included when the step
    reaches them (ValueError: not such a range)."""
    parts = [int(p) for p in text.split(":")]
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1):
        raise ValueError
    return parts, list(range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1))


def sweep_step_note(text: Optional[str], norm: str = "linf") -> Optional[str]:
    """The note for an ℓ∞ range whose step stops before its end (``0:7:2`` is 0, 2, 4, 6), None otherwise; ``text`` is a
    grid :func:`parse_eps_sweep` accepted. The job prints it once its checks pass: a note never comes before an error."""
    if norm != "linf" or text is None or ":" not in str(text):
        return None
    parts, values = _linf_range(str(text).strip())
    if values[-1] == parts[1]:
        return None
    return (f"--eps-sweep {str(text).strip()} is {','.join(map(str, values))}: its step stops at {values[-1]} and leaves out {parts[1]} "
            f"(a list such as {','.join(map(str, [*values, parts[1]]))} keeps it)")


def _linf_radii_hint(text: str) -> Optional[str]:
    """For an ℓ∞ sweep written as radii (``0,0.01,0.03`` or ``0,8/255``): what the grid is and the one meant, else None."""
    tokens = comma_list(text, "--eps-sweep") if ":" not in text else []
    try:
        radii = [parse_number(t, "--eps-sweep") for t in tokens]
    except ConfigError:
        return None
    if not radii or not all(0 <= r <= 1 for r in radii) or all(r == int(r) for r in radii):
        return None
    steps = [round(r * 255) for r in radii]
    near = ", ".join(f"{t} ≈ {k}/255" for t, r, k in zip(tokens, radii, steps) if abs(r * 255 - k) > 1e-6)
    meant = ",".join(str(k) for k in dict.fromkeys(steps))
    return f"linf sweeps are x of ε = x/255 (integers), not radii{f'; {near}' if near else ''}: you probably meant --eps-sweep {meant}"


def sweep_radii(grid: Sequence[float], norm: str) -> List[float]:
    """The radii (pixel units of [0, 1] images) of a sweep grid as :func:`parse_eps_sweep` returns it: x/255 in ℓ∞."""
    return [v / 255 for v in grid] if norm == "linf" else [float(v) for v in grid]


def sweep_eps_text(value: float, norm: str) -> str:
    """One grid value as ε is written: ``8/255`` (ℓ∞) or the ℓ2 radius ``0.5``."""
    return eps_text(sweep_radii([value], norm)[0])


def eps_column_value(eps: float, norm: str) -> float:
    """Radius ``eps`` (pixel units) in the unit of the ε column (:data:`SWEEP_COLUMN`), as a sweep grid gives it: x of
    x/255 in ℓ∞, whole (``8``, not 8.0000) when ``eps`` is a whole number of 1/255 steps; the radius itself in ℓ2."""
    if norm != "linf":
        return eps
    steps = eps * 255
    return round(steps) if abs(steps - round(steps)) < 1e-6 else steps


def sweep_grid_text(grid: Sequence[float], norm: str) -> str:
    """A sweep grid for a report, with its unit: ``ε = x/255, x in 0, 2, 4`` or ``ℓ2 radius ε in 0, 0.25, 0.5``."""
    values = ", ".join(f"{v:g}" for v in grid)
    return f"ε = x/255, x in {values}" if norm == "linf" else f"ℓ2 radius ε in {values}"


def shown_eps_rows(rows: Sequence[Dict[str, Any]], norm: str) -> List[Dict[str, Any]]:
    """Sweep rows for a Markdown table with the ε column written as the grid is (0.0625, 64/255 as 0.25098), not at the
    table's 3 decimals, which would show the ℓ2 radius 0.0625 as 0.062; the CSV keeps the number itself."""
    column = SWEEP_COLUMN[norm]
    return [{**r, column: f"{r[column]:g}"} if isinstance(r.get(column), float) else dict(r) for r in rows]


def marked_ties(rows: Sequence[Dict[str, Any]], ties: torch.Tensor, column: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Rows for a Markdown table whose worst class (``column``) says how many classes share its accuracy (``ties``, one per
    row, from :func:`tied_with_worst`): ``disc (+6 tied)`` rather than ``disc`` singled out among equals; with the note
    that explains the mark when a row has one (else no note). The CSV names the first class alone."""
    marked = [{**r, column: f"{r[column]} (+{int(k)} tied)"} if int(k) > 0 else dict(r) for r, k in zip(rows, ties.tolist())]
    return marked, ([TIES_NOTE, ""] if any(int(k) > 0 for k in ties.tolist()) else [])


def _sample_count_text(n: int) -> str:
    return counted(n, "test sample")


def samples_text(n: int, s: "RobustnessSettings") -> str:
    """Which test samples a report's numbers are over: a draw from the seed, or the split's first n (RobustBench's)."""
    if s.first:
        return f"The first {_sample_count_text(n)} in the split's order (as RobustBench takes them; seed {s.seed} seeds the attacks)"
    return f"{_sample_count_text(n)} drawn with seed {s.seed}"


def eps_text(eps: float) -> str:
    """ε as the seed writes it: ``8/255`` when it is a whole number of 1/255 steps below 1, else the decimal."""
    steps = eps * 255
    return f"{round(steps)}/255" if 0 < eps < 1 and abs(steps - round(steps)) < 1e-6 else f"{eps:.5g}"


# --- what defines a run ---


def _absolute(paths: Sequence[str]) -> List[str]:
    """Weight paths as absolute paths (``~`` expanded), as ``run.json`` keeps them."""
    return [str(Path(p).expanduser().resolve()) for p in paths]


@dataclass
class RobustnessSettings:
    """Everything a run's results depend on; stored in ``run.json`` to refuse mixing runs in one folder."""

    model: str
    weights: List[str]
    dataset: str
    n: Optional[int] = None  # None: DEFAULT_N, or the whole split when smaller
    seed: int = 0
    first: bool = False  # the split's first n samples (RobustBench's) instead of a draw from seed, which then seeds the attacks alone
    eps: float = 8 / 255
    norm: str = "linf"
    ladder: List[str] = field(default_factory=list)
    pgd_steps: int = 0
    pgd_restarts: int = 1
    pgd_loss: str = "ce"
    sweep: List[float] = field(default_factory=list)  # as parse_eps_sweep gives it: x of x/255 (linf) or radii (l2)
    sweep_attack: str = "apgd-ce"
    batch_size: int = 250
    n_iter: Optional[int] = None
    n_queries: Optional[int] = None
    n_restarts: Optional[int] = None
    bf16: bool = False
    dataset_options: Dict[str, Any] = field(default_factory=dict)  # loader options (-o KEY=VALUE), e.g. cifar10c's corruption

    def validate(self) -> "RobustnessSettings":
        self.weights = _absolute(self.weights)  # run.json is the same whatever the cwd or the spelling of the path
        if self.ladder:
            self.ladder = list(resolve_ladder(",".join(self.ladder)))
        self.sweep_attack = ",".join(resolve_ladder(self.sweep_attack))
        if self.n is not None and self.n < 1:
            raise ConfigError(f"--n must be at least 1, got {self.n}")
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"unknown norm {self.norm!r}: use linf or l2")
        if self.pgd_loss not in PGD_LOSSES:
            raise ConfigError(f"unknown PGD loss {self.pgd_loss!r}: use ce (cross-entropy) or cw (the margin loss)")
        if not self.pgd_steps and (self.pgd_loss != "ce" or self.pgd_restarts != 1):
            raise ConfigError("--pgd-loss and --pgd-restarts set up the PGD run, which --pgd K asks for (e.g. --pgd 40): add --pgd or drop them")
        return self

    @property
    def overrides(self) -> Dict[str, int]:
        return {k: v for k, v in (("n_iter", self.n_iter), ("n_restarts", self.n_restarts), ("n_queries", self.n_queries)) if v is not None}

    @property
    def precisions(self) -> List[str]:
        return ["fp32", "bf16"] if self.bf16 else ["fp32"]


class _Autocast(nn.Module):
    """Run ``model`` under bf16 autocast on its input's device (the CLI allows CUDA only); logits come back in fp32.

    Convolutions run on a channels-last copy of the model with channels-last inputs: the layout bf16
    convolution kernels are fastest in. The copy leaves the caller's model (and its fp32 run) as it was.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()


def load_eval_model(model: str, weights: Sequence[str], device: torch.device) -> nn.Module:
    """The named robust model (or ``wsol-checkpoint``) from local files, in eval mode on ``device``."""
    from wsol.models.robustbench import load_robust_model

    files: Any = None if not weights else (weights[0] if len(weights) == 1 else list(weights))
    return load_robust_model(model, files, device)


def test_split(dataset: str, root: Path, size: Optional[int] = None, options: Optional[Dict[str, Any]] = None) -> Any:
    """The test split of ``dataset`` read with loader ``options``, resized to ``size`` (a model's input size) when given."""
    from wsol.data import build_dataset
    from wsol.data.transforms import build_transform

    return build_dataset(dataset, root, "test", transform=build_transform("cub", train=False, size=size) if size else None, **(options or {}))


def load_samples(data: Any, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Images (N×C×H×W in [0, 1]), labels and class names of ``indices`` of a split."""
    samples = [data[i] for i in indices]
    x = torch.stack([s.image for s in samples]).float()
    y = torch.tensor([int(s.label) for s in samples], dtype=torch.long)
    names = list(getattr(data, "class_names", [])) or [str(c) for c in range(int(getattr(data, "num_classes", 0)))]
    return x, y, names


# --- per-chunk work ---


def _chunk_ladder(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, device: torch.device,
                  step: Callable[[str], None]) -> Dict[str, Any]:
    names = resolve_ladder(s.ladder)
    res = run_ladder(model, x, y, eps=s.eps, ladder=s.ladder, norm=s.norm, seed=s.seed, batch_size=s.batch_size, device=device,
                     on_step=lambda rung, points: step(f"{names[rung]} at ε {eps_text(s.eps)} on {points} of {len(y)} points"), **s.overrides)
    return {
        "clean_correct": res.clean_correct.tolist(), "broken_by": res.broken_by.tolist(), "adv_pred": res.adv_pred.tolist(),
        "minutes": [r.minutes for r in res.rungs], "attacked": [r.attacked for r in res.rungs],
    }


def _chunk_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, device: torch.device, chunk: int) -> Dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(s.seed * 1_000_003 + chunk)
    res = pgd_evaluate(model, x, y, eps=s.eps, steps=s.pgd_steps, restarts=s.pgd_restarts, norm=s.norm, loss=s.pgd_loss, generator=gen)
    return {"clean_correct": res.clean_correct.tolist(), "robust": res.robust.tolist(), "adv_pred": res.adv_pred.tolist()}


def _chunk_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, device: torch.device,
                 step: Callable[[str], None]) -> Dict[str, Any]:
    attack = ladder_attack(model, s.sweep_attack, norm=s.norm, seed=s.seed, batch_size=s.batch_size, **s.overrides)
    res = epsilon_sweep(model, attack, x, y, sweep_radii(s.sweep, s.norm), norm=s.norm,
                        on_step=lambda k, points: step(f"{s.sweep_attack} at ε {sweep_eps_text(s.sweep[k], s.norm)} on {points} of {len(y)} points"))
    return {"robust": res.robust.tolist(), "adv_pred": res.adv_pred.tolist(), "attacked": res.attacked}


def _records(out: Path, kind: str) -> Dict[int, Dict[str, Any]]:
    """Every chunk record of ``kind`` written by any rank of this or an earlier run, by chunk id."""
    found: Dict[int, Dict[str, Any]] = {}
    for path in sorted(out.glob(f"{kind}.rank*.jsonl")):
        for rec in read_jsonl(path):
            found.setdefault(int(rec["chunk"]), rec)
    return found


def run_chunks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, kind: str, out: Path,
               device: torch.device, precision: str = "fp32", show_progress: bool = True) -> List[Dict[str, Any]]:
    """Attack this rank's missing chunks (``kind``: ladder, pgd or sweep), appending one line per chunk;
    returns every chunk's record in chunk order once all ranks are done. Progress: a line per chunk and, inside a
    chunk, a line per attack of the ladder and per ε of the sweep (each can take minutes on a CPU)."""
    tag = f"{kind}-{precision}"
    chunks = list(range(0, len(y), s.batch_size))
    done = _records(out, tag)
    mine = [k for k in range(len(chunks)) if k % dist.world_size() == dist.rank() and k not in done]
    attacked = _Autocast(model) if precision == "bf16" else model
    for k in progress(mine, desc=f"{tag} ({len(done)} of {len(chunks)} chunks done before)", enabled=show_progress, each=True):
        sl = slice(chunks[k], chunks[k] + s.batch_size)
        xb, yb = x[sl].to(device), y[sl].to(device)
        step = step_reporter(f"{tag} chunk {k + 1}/{len(chunks)}", enabled=show_progress)
        if kind == "ladder":
            rec = _chunk_ladder(attacked, xb, yb, s, device, step)
        elif kind == "pgd":
            rec = _chunk_pgd(attacked, xb, yb, s, device, k)
        else:
            rec = _chunk_sweep(attacked, xb, yb, s, device, step)
        append_jsonl(out / f"{tag}.rank{dist.rank()}.jsonl", {"chunk": k, **rec})
    dist.barrier()
    done = _records(out, tag)
    missing = [k for k in range(len(chunks)) if k not in done]
    if missing:
        raise WsolError(f"chunks {missing} of {tag} are missing in {out}; rerun the same command to finish them")
    return [done[k] for k in range(len(chunks))]


# --- tables from the merged records ---


def _cat(records: Sequence[Dict[str, Any]], key: str, dim: int = 0) -> torch.Tensor:
    return torch.cat([torch.tensor(r[key]) for r in records], dim=dim)


def ladder_tables(name: str, records: Sequence[Dict[str, Any]], labels: torch.Tensor, attacks: Sequence[str], num_classes: int) -> Dict[str, Any]:
    """The seed's first table (accuracy, delta, minutes per attack), per-class robust accuracy and the confusion under attack."""
    from wsol.attacks.autoattack import Rung

    clean = _cat(records, "clean_correct").bool()
    broken = _cat(records, "broken_by").long()
    adv_pred = _cat(records, "adv_pred").long()
    minutes = torch.tensor([r["minutes"] for r in records], dtype=torch.float64).sum(0)
    attacked = torch.tensor([r["attacked"] for r in records]).sum(0)
    n = len(labels)
    rungs, previous = [], float(clean.double().mean())
    for k, attack in enumerate(attacks):
        acc = float((clean & ((broken < 0) | (broken > k))).double().mean())
        rungs.append(Rung(attack, acc, acc - previous, float(minutes[k]), int(attacked[k]), int((broken == k).sum())))
        previous = acc
    robust = clean & (broken < 0)
    return {
        "rows": ladder_rows(name, float(clean.double().mean()), rungs, n=n),
        "per_class": per_class_accuracy(torch.stack([clean, robust]), labels, num_classes),
        "confusion": attack_confusion(labels, adv_pred, num_classes, mask=clean),
        "n": n,
    }


def sweep_tables(name: str, records: Sequence[Dict[str, Any]], labels: torch.Tensor, grid: Sequence[float], num_classes: int,
                 class_names: Optional[Sequence[str]] = None, norm: str = "linf") -> Dict[str, Any]:
    """The seed's second table (accuracy per class per ε and delta per step in ``rows``, the TOTAL row of drops in ``total``), the
    summary and the confusion at the largest ε; classes are named by ``class_names`` where given, the ε column by the unit of
    ``norm``'s grid (:data:`SWEEP_COLUMN`)."""
    robust = _cat(records, "robust", dim=1).bool()
    adv_pred = _cat(records, "adv_pred", dim=1).long()
    acc = per_class_accuracy(robust, labels, num_classes)
    overall = robust.double().mean(1)
    return {
        "acc": acc,
        "rows": sweep_rows(name, list(grid), acc, overall, class_names=class_names, eps_column=SWEEP_COLUMN[norm]),
        "total": sweep_total_row(name, acc, overall, class_names=class_names),
        "summary": summary_rows(name, list(grid), acc, class_names=class_names, eps_column=SWEEP_COLUMN[norm],
                                counts=torch.tensor(_class_counts(labels, num_classes))),
        "confusion": attack_confusion(labels, adv_pred[-1], num_classes, mask=robust[0] if grid[0] == 0 else None),
        "attacked": torch.tensor([r["attacked"] for r in records]).sum(0).tolist(),
        "robust": robust,
    }


def pgd_tables(name: str, records: Sequence[Dict[str, Any]], labels: torch.Tensor, s: RobustnessSettings, num_classes: int) -> Dict[str, Any]:
    """The PGD table's one row: the attack's settings one to a column (``PGD-40``, norm, loss, restarts: a text cell with a comma
    would be split by ``numpy.genfromtxt``), clean and robust accuracy, the robust one's Wilson interval, the worst class's."""
    clean = _cat(records, "clean_correct").bool()
    robust = _cat(records, "robust").bool()
    per_class = per_class_accuracy(robust, labels, num_classes)
    return {"rows": [{"model": name, "attack": f"PGD-{s.pgd_steps}", "norm": s.norm, "loss": s.pgd_loss, "restarts": s.pgd_restarts,
                      SWEEP_COLUMN[s.norm]: eps_column_value(s.eps, s.norm),
                      "clean accuracy": float(clean.double().mean()), "robust accuracy": float(robust.double().mean()),
                      "n": len(labels), "robust 95% CI": wilson_cell(int(robust.sum()), len(labels)),
                      "worst-class accuracy": float(per_class.nan_to_num(float('inf')).min())}]}


# --- the run ---


UNRECORDED_DEFAULTS: Dict[str, Any] = {"dataset_options": {}, "first": False}
"""Arguments ``run.json`` holds only when they differ from these defaults (so a run.json of a wsol before them is the same run)."""


def _run_record(s: RobustnessSettings) -> Dict[str, Any]:
    """What ``run.json`` holds: the arguments and the SHA-256 of each weight file, so results of a file rewritten
    since (a model retrained into the same path) are never reported as the new model's. Without the digests when a
    file is gone (a study's finished model whose weights were deleted is still done: its results stay)."""
    record = json.loads(json.dumps(asdict(s)))
    for key in UNRECORDED_DEFAULTS:  # kept only when given: a run.json written before they could be is the same run
        if record[key] == UNRECORDED_DEFAULTS[key]:
            del record[key]
    record.update(_budget_record(s))
    if all(Path(w).is_file() for w in s.weights):
        record[WEIGHTS_DIGESTS] = [_file_digest(w) for w in s.weights]
    return record


def _budget_record(s: RobustnessSettings) -> Dict[str, Dict[str, str]]:
    """The budget each attack of the ladder and of the sweep runs with, as ``run.json`` keeps it: the same names can run
    with other budgets (``--ladder standard``'s APGD-CE 1 restart, the sweep's 5), so a resumed run never mixes two."""
    record = {}
    if s.ladder:
        record[LADDER_BUDGETS] = attack_budgets(s.ladder, None, norm=s.norm, **s.overrides)
    if s.sweep:
        record[SWEEP_BUDGETS] = attack_budgets(s.sweep_attack, None, norm=s.norm, **s.overrides)
    return record


def _budgets_before_recorded(old: Dict[str, Any], new: Dict[str, Any]) -> None:
    """Fill in the budgets of a ``run.json`` written before they were recorded: what that wsol ran, which is today's
    budgets except for a ladder of exactly ``standard``'s attacks without --n-restarts, whose APGD-CE ran 5 restarts then
    (left unknown); with --n-restarts it ran that many then as now."""
    older_standard = tuple(old.get("ladder") or ()) == LADDERS["standard"] and old.get("n_restarts") is None
    for key in (LADDER_BUDGETS, SWEEP_BUDGETS):
        if key in new and key not in old:
            old[key] = "not recorded" if key == LADDER_BUDGETS and older_standard else new[key]


def _other_arguments_text(diffs: Sequence[str], old: Dict[str, Any], new: Dict[str, Any], folder: Path, fix: str, whose: str = "") -> str:
    """``{whose} (each key of run.json that differs, was … now …); what to do`` for an error line. The budget keys can
    differ under equal options (a budget key alone says why), and budgets alone the same arguments give again: ``fix``
    then does not help. A budget is named as a whole (``sweep_budgets``, not the ``sweep_budgets.apgd-ce`` where the two
    records differ), without its values (the budgets of every attack)."""
    other = "its attacks ran with other iterations, restarts or queries"
    budgets = {LADDER_BUDGETS: f"ladder_budgets: {other}, e.g. an older wsol's --ladder standard, whose APGD-CE ran 5 restarts",
               SWEEP_BUDGETS: f"sweep_budgets: {other}"}
    keys = list(dict.fromkeys(d.split(".", 1)[0] if d.split(".", 1)[0] in budgets else d for d in diffs))
    if set(keys) <= set(budgets):
        fix = f"the same arguments cannot resume it: use another --out, or delete {folder} to redo it"
    old, new = {**UNRECORDED_DEFAULTS, **old}, {**UNRECORDED_DEFAULTS, **new}  # "first was True, now False", not "now none"
    if len(keys) == 1 and keys[0] in budgets:
        named = budgets[keys[0]]
    else:
        named = "; ".join(filter(None, [differences_text([k for k in keys if k not in budgets], old, new), ", ".join(k for k in keys if k in budgets)]))
    return f"{whose} ({named}); {fix}"


@functools.lru_cache(maxsize=None)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _file_digest(path: str) -> str:
    """SHA-256 of a weight file, computed once per version of it (a study checks each file twice; models can be GBs)."""
    st = Path(path).stat()
    return _digest_of(str(path), st.st_size, st.st_mtime_ns)


def _run_differences(out: Path, new: Dict[str, Any]) -> Optional[Tuple[List[str], Dict[str, Any]]]:
    """The arguments in which ``out``'s run differs from the run record ``new`` (:func:`_run_record`), with that run's
    record (None: no run there yet, or one killed before its first chunk was done, which has nothing to keep);
    ``weights_sha256`` alone: the same files, rewritten since. The digest is named only alone: beside other arguments
    (other --weights, another --n) those are what the user has to change."""
    path = out / ROBUSTNESS_RUN_FILE
    if not path.is_file() or not any(read_jsonl(p) for p in out.glob(ROBUSTNESS_CHUNK_FILES)):
        return None
    old = json.loads(path.read_text())
    old["weights"] = _absolute(old.get("weights") or [])  # a run.json written before weights were kept absolute
    _budgets_before_recorded(old, new)
    diffs = [d for d in config_differences(old, new) if d != WEIGHTS_DIGESTS and not _same_radii(d, old.get(d), new.get(d))]
    return diffs or ([WEIGHTS_DIGESTS] if rewritten_since(old, new, WEIGHTS_DIGESTS) else []), old


def _same_radii(key: str, old: Any, new: Any) -> bool:
    """``--eps`` or an ℓ2 ``--eps-sweep`` spelled otherwise but the same radii (to float32): not another run."""
    if key == "eps":
        return same_radius(old, new)
    return key == "sweep" and isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and all(map(same_radius, old, new))


def refuse_other_run_folder(out: Path, study: bool) -> None:
    """Refuse an ``--out`` that holds another job's run (training, attack, demo, or for a study one model's robustness
    run and for one model's run a study): the files would mix and our ``report.md`` would replace its report."""
    refuse_other_run(out, "robustness study" if study else "robustness")


def _stale_outputs(out: Path) -> List[Path]:
    """What a run wrote into ``out`` besides ``run.json``, in the order a start-over removes it: a study's summary first
    (it marks the model done), then the report, tables and figures (a kill before the new report left the old one beside
    the new results), the chunks last (while they are there, a rerun compares ``run.json`` and starts over again)."""
    return [*sorted(out.glob(STUDY_RESULT_FILE)), *_report_outputs(out), *sorted(out.glob(ROBUSTNESS_CHUNK_FILES))]


def _report_outputs(out: Path) -> List[Path]:
    """The report, tables and figures in ``out`` (:data:`RUN_REPORT`): a study writes its own into its top folder."""
    return [p for pattern in RUN_REPORT for p in sorted(out.glob(pattern))]


def _check_run_file(out: Path, s: RobustnessSettings) -> None:
    """Refuse other arguments into ``out``; drop the results of an earlier version of the same weight files (a model
    retrained since) and start over; then record ``s`` in ``run.json``. Every rank calls it and follows rank 0's reading."""
    record = _run_record(s)
    diffs, old = dist.gather_objects(_run_differences(out, record))[0] or ([], {})
    if diffs == [WEIGHTS_DIGESTS]:
        start_over(out, "results", ", ".join(s.weights), _stale_outputs(out))
        dist.barrier()
    elif diffs:
        fix = "use another --out or the same arguments"
        raise ConfigError(f"{out} holds a robustness run with other arguments{_other_arguments_text(diffs, old, record, out, fix)}")
    write_json(out / ROBUSTNESS_RUN_FILE, record)


def unused_options_note(s: RobustnessSettings) -> Optional[str]:
    """A note naming the budget options (--n-iter, --n-restarts, --n-queries) no attack of ``s`` uses, and the attacks of
    ``s`` a given option leaves as they were (``--n-iter`` does not shrink Square, whose budget is ``--n-queries``), which
    would otherwise go unseen (None: every option given changes every attack it could). run.json keeps the options as
    given, so runs written with them resume as before."""
    attacks = list(dict.fromkeys([*s.ladder, *(resolve_ladder(s.sweep_attack) if s.sweep else [])]))
    parts = []
    unused = unused_overrides(attacks, s.overrides)
    if unused:
        options = " and ".join(f"{option_flag(k)} (used by {', '.join(OVERRIDE_USERS[k])})" for k in unused)
        run = f"the attacks {', '.join(attacks)}" if attacks else "--pgd alone (its budget is --pgd and --pgd-restarts)"
        parts.append(f"{options} {'has' if len(unused) == 1 else 'have'} no effect with {run}")
    parts += [f"{option_flag(k)} does not change {a}: {why}" for k, a, why in untouched_by_overrides(attacks, s.overrides)]
    return "; ".join(parts) or None


def default_label(s: RobustnessSettings) -> str:
    """How a run names its model: the registry name, or for a wsol checkpoint the folder it was trained into."""
    if s.model == "wsol-checkpoint" and s.weights:
        path = Path(s.weights[0]).expanduser().resolve()
        return path.parent.name or path.stem
    return s.model


def _clean_accuracy(result: Dict[str, Any], s: RobustnessSettings, precision: str) -> Optional[float]:
    """The accuracy without attack, from whichever table of ``precision`` holds it (None: none does)."""
    for key, column in (("ladder", "accuracy"), ("pgd", "clean accuracy"), ("sweep", "overall")):
        if f"{key}-{precision}" in result and (key != "sweep" or s.sweep[0] == 0):
            return float(result[f"{key}-{precision}"]["rows"][0][column])
    return None


def _notes(result: Dict[str, Any], clean_accuracy: Dict[str, Optional[float]]) -> List[str]:
    """Report lines that explain a table a reader would otherwise misread: classes absent from the n samples
    ("–" cells) and a model (label → its clean accuracy; "" when the report has one) that gets no sample right
    without attack (nothing for the attacks to attack)."""
    names, labels = result["class_names"], torch.as_tensor(result["labels"])
    absent = [names[c] for c in range(len(names)) if not bool((labels == c).any())]
    lines = []
    if absent:
        lines.append(f"–: no test sample of {', '.join(absent)} among the {result['n']} drawn (a larger --n includes more classes).")
    for label, accuracy in clean_accuracy.items():
        if accuracy == 0:
            lines.append(f"No sample is classified correctly without attack{f' by {label}' if label else ''}, so there was nothing "
                         "to attack and every accuracy is 0: check that the model was trained on this dataset, with its class order.")
    return lines + [""] if lines else []


def check_model_fits(model: nn.Module, x: torch.Tensor, names: Sequence[str], name: str, s: RobustnessSettings) -> int:
    """The model's class count, from one forward of ``x`` (images of ``s.dataset``); a model that cannot classify
    them, has another class count than the dataset or too few classes for ``s``'s attacks is a one-line error."""
    try:
        with torch.no_grad():
            num_classes = int(model(x).shape[1])
    except RuntimeError as err:  # a forward that cannot take these images: the model was made for another dataset
        first = (str(err).strip().splitlines() or ["shape mismatch"])[0]
        raise WsolError(f"model {name} cannot classify the {tuple(x.shape[1:])} images of {s.dataset} ({first}); use the dataset it was trained on") from None
    if names and len(names) != num_classes:
        raise WsolError(f"model {name} has {num_classes} classes but dataset {s.dataset} has {len(names)}")
    if s.model == "wsol-checkpoint":
        check_checkpoint_dataset(s.weights[0], s.dataset, names)
    check_num_classes([*s.ladder, *(resolve_ladder(s.sweep_attack) if s.sweep else [])], num_classes)
    return num_classes


def evaluate_robustness(s: RobustnessSettings, root: Path, out: Path, device: Optional[str] = None, show_progress: bool = True,
                        locked: bool = False, label: Optional[str] = None, model: Optional[nn.Module] = None,
                        data: Optional[Any] = None, notes: Sequence[Optional[str]] = ()) -> Dict[str, Any]:
    """Run the ladder, the PGD evaluation and/or the sweep that ``s`` asks for into ``out``; rank 0 writes the
    tables (CSV + ``report.md``) and figures, naming the model ``label`` (a study's name for it; default ``s.model``).
    ``model`` is ``s``'s model and ``data`` its test split (at the model's input size) when the caller has loaded
    them already (a study). ``notes`` (about the arguments, e.g. :func:`sweep_step_note`) are printed once the checks
    pass. Returns the tables (on every rank)."""
    s.validate()
    dist.init_from_env()
    dev = _run_device(s, device)
    out = Path(out)
    refuse_other_run_folder(out, study=False)
    name = label or default_label(s)
    model = load_eval_model(s.model, s.weights, dev) if model is None else model.to(dev)
    data = test_split(s.dataset, root, getattr(model, "input_size", None), s.dataset_options) if data is None else data
    x, y, names = load_samples(data, select_samples(len(data), s.n, s.seed, default=DEFAULT_N, first=s.first))
    s = replace(s, n=len(y))  # run.json keeps the count drawn, so "--n 500" and the default 500 are the same run
    num_classes = check_model_fits(model, x[:1].to(dev), names, name, s)
    with (contextlib.nullcontext(out) if locked else lock_run_folder(out)):
        dist.barrier()
        _check_run_file(out, s)
        dist.mark_work_started()
        if not locked:  # a study notes them once for all its models
            for text in [*notes, unused_options_note(s)]:
                note(text)
        if s.model == "wsol-checkpoint":
            note(class_names_note(s.weights[0], s.dataset, names))
        result: Dict[str, Any] = {"model": name, "n": len(y), "class_names": names, "labels": y}
        for precision in s.precisions:
            tag = "" if precision == "fp32" else " (bf16)"
            if s.ladder:
                recs = run_chunks(model, x, y, s, "ladder", out, dev, precision, show_progress)
                result[f"ladder-{precision}"] = ladder_tables(name + tag, recs, y, s.ladder, num_classes)
            if s.pgd_steps:
                recs = run_chunks(model, x, y, s, "pgd", out, dev, precision, show_progress)
                result[f"pgd-{precision}"] = pgd_tables(name + tag, recs, y, s, num_classes)
            if s.sweep:
                recs = run_chunks(model, x, y, s, "sweep", out, dev, precision, show_progress)
                result[f"sweep-{precision}"] = sweep_tables(name + tag, recs, y, s.sweep, num_classes, names, s.norm)
        if dist.is_main_process():
            write_run_report(out, s, result)
        dist.barrier()
    return result


def _class_counts(labels: Any, num_classes: int) -> List[int]:
    """Test samples per class among those drawn (``labels``): how much each per-class accuracy rests on."""
    return torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).tolist()


def _independent_work(sweep: Sequence[float], attacked: Sequence[int]) -> str:
    """The sweep's attacked points against what one independent run per ε > 0 would attack (every clean-correct point
    at each), the work the incremental sweep saves."""
    nonzero = [k for e, k in zip(sweep, attacked) if e > 0]
    if not nonzero:
        return "no ε > 0 was attacked"
    return f"{sum(nonzero)} in all, where an independent run per ε > 0 would attack {nonzero[0] * len(nonzero)}"


def _budget_line(ladder: Any, s: RobustnessSettings, num_classes: int, what: str = "Budget per attack") -> str:
    """``Budget per attack: apgd-ce 100 iterations, 1 restart; …`` as the attacks of ``ladder`` ran (AutoAttack's
    settings for that ladder, changed by --n-iter/--n-restarts/--n-queries); ``what`` opens the line."""
    budgets = attack_budgets(ladder, num_classes, norm=s.norm, **s.overrides)
    return f"{what}: " + "; ".join(f"{a} {b}" for a, b in budgets.items()) + "."


def _counts_line(result: Dict[str, Any], names: Sequence[str]) -> str:
    """The report line under per-class tables: ``Samples per class: disc 5, square 11, ….``"""
    return "Samples per class: " + ", ".join(f"{c} {k}" for c, k in zip(names, _class_counts(result["labels"], len(names)))) + "."


def write_run_report(out: Path, s: RobustnessSettings, result: Dict[str, Any]) -> Path:
    """CSV tables, figures and ``report.md`` for one model's run."""
    from wsol.report.robustness_figures import plot_class_accuracy_vs_eps, plot_drop_heatmap

    names, model = result["class_names"], result["model"]
    if model == s.model:
        source = ""
    elif s.model == "wsol-checkpoint":
        source = f"Checkpoint {', '.join(s.weights)}. "
    else:
        source = f"Model {s.model}" + (f" from {', '.join(s.weights)}" if s.weights else "") + ". "
    lines = [f"# Robustness of {model} on {dataset_label(s.dataset, s.dataset_options)}", "",
             f"{source}{samples_text(result['n'], s)}; ε in pixel units of [0, 1] images; accuracies are fractions.", ""]
    for precision in s.precisions:
        lines += _notes(result, {"": _clean_accuracy(result, s, precision)})
        if f"ladder-{precision}" in result:
            lad = result[f"ladder-{precision}"]
            write_csv(out / f"ladder_{precision}.csv", lad["rows"])
            classes = matrix_rows(lad["per_class"], ["clean", "robust"], names, corner="accuracy") + matrix_rows(
                [_class_counts(result["labels"], len(names))], ["n (samples)"], names, corner="accuracy")
            write_csv(out / f"ladder_per_class_{precision}.csv", classes)
            write_csv(out / f"ladder_confusion_{precision}.csv", matrix_rows(lad["confusion"], names, names, corner="true \\ adversarial"))
            lines += [f"## AutoAttack ladder ({precision}, ε = {eps_text(s.eps)}, {s.norm})", "", markdown_table(lad["rows"], floatfmt=".4f"),
                      MINUTES_NOTE, _budget_line(s.ladder, s, len(names)), "",
                      "Per class:", "", markdown_table(classes, floatfmt=".3f"),
                      "Confusion under the ladder (clean-correct samples; row: true class, column: prediction after attack):", "",
                      markdown_table(matrix_rows(lad["confusion"], names, names, corner="true \\ adv")), ""]
        if f"pgd-{precision}" in result:
            rows = result[f"pgd-{precision}"]["rows"]
            write_csv(out / f"pgd_{precision}.csv", rows)
            lines += [f"## PGD ({precision})", "", markdown_table(shown_eps_rows(rows, s.norm), floatfmt=".4f"), ""]
        if f"sweep-{precision}" in result:
            sw = result[f"sweep-{precision}"]
            write_csv(out / f"sweep_{precision}.csv", sw["rows"])
            write_csv(out / f"sweep_total_{precision}.csv", [sw["total"]])
            write_csv(out / f"sweep_summary_{precision}.csv", sw["summary"])
            write_csv(out / f"sweep_confusion_{precision}.csv", matrix_rows(sw["confusion"], names, names, corner="true \\ adversarial"))
            fig = plot_class_accuracy_vs_eps(sw["acc"], s.sweep, out / FIGURES_FOLDER / f"sweep_{precision}.png", names,
                                             title=f"{model}: accuracy per class against ε ({s.sweep_attack}, {s.norm}, {precision})",
                                             eps_axis=SWEEP_AXIS[s.norm])
            heat = plot_drop_heatmap(sw["acc"][1:] - sw["acc"][:-1], [f"{a:g}→{b:g}" for a, b in zip(s.sweep, s.sweep[1:])],
                                     out / FIGURES_FOLDER / f"sweep_drops_{precision}.png", names,
                                     title=f"{model}: accuracy change per ε step ({s.sweep_attack}, {s.norm}, {precision})",
                                     row_axis="ε step" + SWEEP_AXIS[s.norm][1:])
            summary, tie_note = marked_ties(shown_eps_rows(sw["summary"], s.norm), tied_with_worst(sw["acc"]), "worst class")
            lines += [f"## Per-class ε sweep ({precision}, {s.sweep_attack}, {sweep_grid_text(s.sweep, s.norm)})", "",
                      markdown_table(shown_eps_rows(with_total_row(sw["rows"], sw["total"], SWEEP_COLUMN[s.norm]), s.norm), floatfmt=".3f"),
                      SWEEP_NOTE, "",
                      markdown_table(summary, floatfmt=".3f"), *tie_note, SPREAD_NOTE, "",
                      _counts_line(result, names), "",
                      f"Points attacked per ε (the clean-correct ones at the first ε > 0, then those still robust at the ε before): {', '.join(f'{sweep_eps_text(e, s.norm)}: {k}' for e, k in zip(s.sweep, sw['attacked']))}; "
                      f"{_independent_work(s.sweep, sw['attacked'])}. "
                      f"{_budget_line(s.sweep_attack, s, len(names))}", "",
                      f"Confusion at ε = {sweep_eps_text(s.sweep[-1], s.norm)} ({'clean-correct' if s.sweep[0] == 0 else 'all'} samples; "
                      "row: true class, column: prediction under attack):", "",
                      markdown_table(matrix_rows(sw["confusion"], names, names, corner="true \\ adv")), "",
                      f"![{fig.name}]({FIGURES_FOLDER}/{fig.name}) ![{heat.name}]({FIGURES_FOLDER}/{heat.name})", ""]
    report = out / REPORT_FILE
    write_text(report, "\n".join(lines))
    return report


# --- the study ---


@dataclass
class StudyModel:
    """One model of a study: a label, the registry name and its weight file(s)."""

    label: str
    model: str
    weights: List[str]


_YAML_SCALARS: Tuple[Tuple[type, str], ...] = ((bool, "a yes/no value"), (int, "a whole number"), (float, "a decimal number"),
                                              (datetime.date, "a date"))
"""What YAML makes of an unquoted name such as yes, 1, 010 (8), 1.50 (1.5) or 2024-01-02 (bool before int: it is one)."""


def read_study(path: Path) -> List[StudyModel]:
    """The models of a study YAML: ``models:`` a list of {name, model?, weights?} or {name, checkpoint}; paths relative to the file."""
    if Path(path).is_dir():
        yamls = sorted(p.name for p in Path(path).glob("*.y*ml"))
        hint = f", e.g. {Path(path) / yamls[0]}" if yamls else ""
        raise ConfigError(f"study file {path} is a folder; pass the YAML file that lists the models{hint}")
    if not Path(path).is_file():
        raise ConfigError(f"study file not found: {path}")
    doc = read_yaml(path, "study file")
    if isinstance(doc, dict) and set(doc) - {"models"}:
        unknown = ", ".join(sorted(str(k) for k in set(doc) - {"models"}))
        raise ConfigError(f"study file {path}: unknown top-level key(s) {unknown}; the file holds only 'models:' "
                          "(ladder, norm, ε, sweep and n are command-line options)")
    entries = doc.get("models") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"study file {path} needs a non-empty list under 'models:' (each with name and weights, or name and checkpoint)")
    base = Path(path).resolve().parent
    models: List[StudyModel] = []
    keys = {"name", "model", "weights", "checkpoint"}
    for i, entry in enumerate(entries):
        raw_name = entry.get("name") if isinstance(entry, dict) else None
        kind = next((k for t, k in _YAML_SCALARS if isinstance(raw_name, t)), None)
        if kind:
            raise ConfigError(f"study file {path}, model {i + 1}: YAML reads its name as {kind} ({raw_name}), not as the "
                              "text written; names become folder names and table rows, so quote it as you wrote it, e.g. name: \"1\" for name: 1")
        if not isinstance(raw_name, str):
            raise ConfigError(f"study file {path}, model {i + 1}: give it a name and weights, or a name and a checkpoint")
        unknown = sorted(str(k) for k in set(entry) - keys)
        if unknown:
            raise ConfigError(f"study file {path}, model {i + 1}: unknown key(s) {', '.join(unknown)}; use the keys name, model, weights or checkpoint")
        if "checkpoint" in entry and ("model" in entry or "weights" in entry):
            raise ConfigError(f"study file {path}, model {entry['name']}: give either a checkpoint or model and weights, not both")
        if "model" not in entry and "checkpoint" not in entry and not _is_robust_model(entry["name"]):
            what = "weights without model: add model: NAME, the architecture they are for" if "weights" in entry else \
                "a name alone names no model; add checkpoint: FILE (a wsol checkpoint), or model: NAME and weights: FILE"
            raise ConfigError(f"study file {path}, model {entry['name']}: {what} (see `wsol models`)")
        if "checkpoint" in entry:
            name, files = "wsol-checkpoint", [entry["checkpoint"]]
        else:
            name = str(entry.get("model", entry["name"]))
            raw = entry.get("weights")
            files = [] if raw is None else ([raw] if isinstance(raw, str) else raw)
        label = str(entry["name"])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ConfigError(f"study file {path}, model {label}: weights and checkpoint are file paths (a path or a list of paths)")
        if any(not f.strip() for f in files):  # "" would name the study file's own folder
            what = "its checkpoint path is empty" if "checkpoint" in entry else "an empty path among its weights"
            raise ConfigError(f"study file {path}, model {label}: {what}; give the file's path, relative to the study file")
        if not label or label in (".", "..") or "/" in label or "\\" in label:
            raise ConfigError(f"study file {path}: model name {label!r} names a run folder; use letters, digits, '-' or '_' without '/'")
        for f in files:
            typed = Path(f).expanduser()
            if not (base / typed).exists() and not typed.is_absolute() and typed.exists():
                raise ConfigError(f"study file {path}, model {label}: {f} is not in {base} (paths in a study file are relative to its folder); "
                                  f"write {typed.resolve()} or a path relative to {base}")
        models.append(StudyModel(label, name, [str(base / Path(f).expanduser()) for f in files]))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"study file {path} names a model twice; give each model its own name")
    folded: Dict[str, str] = {}
    for label in labels:
        if label.casefold() in folded:
            raise ConfigError(f"study file {path} names two models alike but for case ({folded[label.casefold()]} and {label}); their run folders "
                              "would be one folder on a case-insensitive file system (macOS, Windows): give names that differ in more than case")
        folded[label.casefold()] = label
    first: Dict[Tuple[str, Tuple[str, ...]], str] = {}
    for m in models:
        key = (m.model, tuple(str(Path(f).resolve()) for f in m.weights))
        if key in first:
            raise ConfigError(f"study file {path} lists the same model and weights twice ({first[key]} and {m.label}); "
                              "drop one, or point it at its own weights")
        first[key] = m.label
    return models


def _is_robust_model(name: str) -> bool:
    """Whether ``name`` is an evaluation model of ``wsol models`` (a study entry may then be its name alone)."""
    from wsol.models.robustbench import ROBUST_MODELS

    return name in ROBUST_MODELS


def _run_device(s: RobustnessSettings, device: Optional[str]) -> torch.device:
    """The device a run uses; ``--bf16`` (CUDA autocast) is refused anywhere else."""
    dev = select_device(device)
    if s.bf16 and dev.type != "cuda":
        raise ConfigError("--bf16 runs CUDA autocast and needs a CUDA device; drop --bf16 on CPU")
    return dev


def run_study(study: Path, template: RobustnessSettings, root: Path, out: Path, device: Optional[str] = None,
              show_progress: bool = True, notes: Sequence[Optional[str]] = ()) -> Path:
    """Ladder and sweep for every model of ``study`` (one run folder each under ``out/models``; a finished model is
    skipped), then one ``report.md`` with both of the seed's tables, the average per class across models and the figures.
    Every unfinished model is loaded once, up front, and held in CPU memory until its turn (the seed's five models: about
    5 GB), so a wrong name, a broken file or a model of another dataset fails before the first attack. ``notes`` are
    printed once those checks pass."""
    dist.init_from_env()  # before the lock: under torchrun only rank 0 takes it (uninitialised, every rank is rank 0)
    _run_device(template, device)
    models = read_study(study)
    out = Path(out)
    refuse_other_run_folder(out, study=True)
    splits: Dict[Optional[int], Any] = {}  # the test split by input size: read once, whatever the number of models

    def split(size: Optional[int] = None) -> Any:
        if size not in splits:
            splits[size] = test_split(template.dataset, root, size, template.dataset_options)
        return splits[size]

    template = replace(template, n=len(select_samples(len(split()), template.n, template.seed, default=DEFAULT_N, first=template.first)))
    runs = {m.label: RobustnessSettings(**{**asdict(template), "model": m.model, "weights": m.weights}).validate() for m in models}
    records = {m.label: _run_record(runs[m.label]) for m in models}
    found = {m.label: _run_differences(out / "models" / m.label, records[m.label]) for m in models}
    diffs = {label: None if got is None else got[0] for label, got in found.items()}
    for label, differ in diffs.items():
        if differ and differ != [WEIGHTS_DIGESTS]:  # the same files rewritten since: that model starts over
            own = set(differ) <= {"model", "weights"}  # the YAML gave this name other weights: only its folder is in the way
            fix = f"give it another name, or delete {out / 'models' / label} to redo it" if own else "use another --out or the same arguments"
            differ_text = _other_arguments_text(differ, found[label][1], records[label], out / "models" / label, fix, whose=f" for model {label}")
            raise ConfigError(f"{out} holds a study run with other arguments{differ_text}")
    finished = {label for label, differ in diffs.items() if differ == [] and (out / "models" / label / STUDY_RESULT_FILE).is_file()}
    # an unknown name or a missing or broken file fails now, not after hours of the models before it
    loaded = {m.label: load_eval_model(m.model, m.weights, torch.device("cpu")) for m in models if m.label not in finished}
    for label, model in loaded.items():  # and a model of another dataset fails now too, not when its turn comes
        x, _, names = load_samples(split(getattr(model, "input_size", None)), [0])
        check_model_fits(model, x, names, label, runs[label])
    results: Dict[str, Dict[str, Any]] = {}
    with lock_run_folder(out):
        for text in [*notes, unused_options_note(template)]:
            note(text)
        if len(finished) < len(models):  # the study's report is of the whole set: a model to (re)run makes it stale until the end
            remove_outputs(_report_outputs(out))
        for i, m in enumerate(models):
            folder = out / "models" / m.label
            done = folder / STUDY_RESULT_FILE
            if show_progress and dist.is_main_process():
                print(f"study: model {i + 1} of {len(models)}, {m.label}" + (" (done before, skipped)" if m.label in finished else ""),
                      file=sys.stderr, flush=True)
            if m.label in finished:
                results[m.label] = _study_result(json.loads(done.read_text()), template.norm)
                continue
            model = loaded.pop(m.label)
            result = evaluate_robustness(runs[m.label], root, folder, device, show_progress, locked=True, label=m.label,
                                         model=model, data=split(getattr(model, "input_size", None)))
            keep = {"n": result["n"], "class_names": result["class_names"], "labels": result["labels"],
                    "ladder": result["ladder-fp32"]["rows"], "per_class": result["ladder-fp32"]["per_class"],
                    "acc": result["sweep-fp32"]["acc"], "summary": result["sweep-fp32"]["summary"],
                    "sweep": result["sweep-fp32"]["rows"], "confusion": result["sweep-fp32"]["confusion"],
                    "robust_at_max_eps": result["sweep-fp32"]["robust"][-1]}
            record = _jsonable(keep)
            write_json(done, record)
            results[m.label] = _study_result(json.loads(json_text(record)), template.norm)  # as a rerun reads it back
        report = out / REPORT_FILE
        if dist.is_main_process():
            _study_report(out, template, results)
        dist.barrier()
    return report


def _study_result(result: Dict[str, Any], norm: str) -> Dict[str, Any]:
    """A model's ``result.json`` as the study report takes it. JSON writes a class without a drawn sample as null
    (:func:`wsol.utils.io.json_text`) where its accuracy is NaN: the accuracy matrices get NaN back, and the sweep rows
    (with their TOTAL row in ``total``) are made again from them, so the report shows "–" (undefined) there and "" only
    where a cell does not apply (the first ε's deltas), whether the model ran now or in an earlier run. The intervals,
    [low, high] in JSON (text in a result.json of an older wsol, which also ends its sweep rows with the TOTAL row), are
    made again from the accuracies and counts."""
    result = _named_eps_column(result, norm)
    for key in ("acc", "per_class"):  # ε × classes and (clean, robust) × classes
        if key in result:
            result[key] = [[float("nan") if v is None else v for v in row] for row in result[key]]
    column = SWEEP_COLUMN[norm]
    rows = [r for r in result["sweep"] if isinstance(r[column], (int, float))]
    acc, overall = torch.tensor(result["acc"], dtype=torch.float64), torch.tensor([r["overall"] for r in rows], dtype=torch.float64)
    model = rows[0]["model"]
    result["sweep"] = sweep_rows(model, [r[column] for r in rows], acc, overall, class_names=result["class_names"], eps_column=column)
    result["total"] = sweep_total_row(model, acc, overall, class_names=result["class_names"])
    for row in result["ladder"]:
        if "n" in row:
            row["95% CI"] = accuracy_interval(row["accuracy"], row["n"])
    for row in result["summary"]:
        if "worst-class n" in row:
            row["worst-class 95% CI"] = accuracy_interval(row["worst-class accuracy"], row["worst-class n"])
    return result


def _named_eps_column(result: Dict[str, Any], norm: str) -> Dict[str, Any]:
    """A finished model's result with its sweep rows' ε column named by unit: one written before the column
    said its unit calls it ``eps``, which would split the study's tables into two ε columns."""
    for key in ("sweep", "summary"):
        result[key] = [{(SWEEP_COLUMN[norm] if k == "eps" else k): v for k, v in row.items()} for row in result[key]]
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _paired_section(results: Dict[str, Dict[str, Any]], eps: str, out: Path) -> List[str]:
    """Each later model's robust accuracy at the sweep's largest ε minus the first model's, on the same samples, with
    the discordant pairs and McNemar's exact p (models finished by a wsol that kept no per-sample results are left out);
    the rows also go to ``out/paired.csv``."""
    kept = {label: torch.as_tensor(res["robust_at_max_eps"]) for label, res in results.items() if "robust_at_max_eps" in res}
    if len(kept) < 2:
        (out / "paired.csv").unlink(missing_ok=True)  # an earlier report's comparison is not this one's
        return []
    (first, base), *others = kept.items()
    rows = []
    for label, robust in others:
        d = paired_accuracy_difference(base, robust)
        rows.append({"model": label, "against": first, "n (samples)": d["n"], "accuracy difference": d["difference"],
                     "robust only here": d["only_after"], f"robust only in {first}": d["only_before"],
                     "McNemar exact p": float("nan") if d["p"] is None else d["p"]})  # undefined: '–' in Markdown, empty in CSV
    write_csv(out / "paired.csv", rows)
    return [f"## Paired comparison at ε = {eps} (the same samples)", "",
            f"Each model's robust accuracy minus {first}'s, sample by sample; a p-value below 0.05 is a difference these samples "
            "show, a larger one is not (p is undefined without a sample robust in one model only).", "",
            markdown_table(rows, floatfmt=".4f")]


def _study_report(out: Path, s: RobustnessSettings, results: Dict[str, Dict[str, Any]]) -> None:
    from wsol.report.robustness_figures import plot_class_accuracy_vs_eps, plot_drop_heatmap

    first = next(iter(results.values()))
    names = first["class_names"]
    ladder = [dict(r, model=label) for label, res in results.items() for r in res["ladder"]]
    sweep = [dict(r, model=label) for label, res in results.items() for r in res["sweep"]]  # the CSV: one record per ε
    sweep_shown = [dict(r, model=label) for label, res in results.items() for r in with_total_row(res["sweep"], res["total"], SWEEP_COLUMN[s.norm])]
    summary = [dict(r, model=label) for label, res in results.items() for r in res["summary"]]
    acc = {label: torch.tensor(res["acc"], dtype=torch.float64) for label, res in results.items()}
    across = across_models_rows(acc, class_names=names)
    per_model = [{"model": label, "average total drop": float(class_mean(total_drop(a))),
                  "worst class at max ε": names[int(torch.nan_to_num(a[-1], nan=float('inf')).argmin())],
                  "worst-class accuracy at max ε": float(torch.nan_to_num(a[-1], nan=float('inf')).min()),
                  "overall total drop": results[label]["total"]["overall"]} for label, a in acc.items()]
    write_csv(out / "ladder.csv", ladder)
    write_csv(out / "sweep.csv", sweep)
    write_csv(out / "sweep_summary.csv", summary)
    write_csv(out / "across_models.csv", across)
    write_csv(out / "per_model.csv", per_model)
    shown_summary, summary_note = marked_ties(shown_eps_rows(summary, s.norm), torch.cat([tied_with_worst(a) for a in acc.values()]), "worst class")
    shown_per_model, per_model_note = marked_ties(per_model, torch.stack([tied_with_worst(a[-1]) for a in acc.values()]), "worst class at max ε")
    figures = []
    for label, a in acc.items():
        figures.append(plot_class_accuracy_vs_eps(a, s.sweep, out / FIGURES_FOLDER / f"{label}_sweep.png", names,
                                                  title=f"{label}: accuracy per class against ε ({s.sweep_attack}, {s.norm})",
                                                  eps_axis=SWEEP_AXIS[s.norm]))
    span = f"ε {sweep_eps_text(s.sweep[0], s.norm)} → {sweep_eps_text(s.sweep[-1], s.norm)}"
    figures.append(plot_drop_heatmap(torch.stack([total_drop(a) for a in acc.values()]), list(acc), out / FIGURES_FOLDER / "total_drops.png",
                                     names, title=f"total accuracy change per class, {span} ({s.sweep_attack}, {s.norm})",
                                     row_axis="model"))
    lines = [f"# Per-class robustness study on {dataset_label(s.dataset, s.dataset_options)}", "",
             f"{samples_text(first['n'], s)}; ladder {', '.join(s.ladder)} at ε = {eps_text(s.eps)} ({s.norm});",
             f"sweep with {s.sweep_attack} ({s.norm}) over {sweep_grid_text(s.sweep, s.norm)}. Accuracies are fractions; deltas negative = lost.", "",
             _counts_line(first, names), "",
             *_notes(first, {label: float(res["ladder"][0]["accuracy"]) for label, res in results.items()}),
             "## Table 1: AutoAttack ladder (accuracy, delta and minutes per attack)", "", markdown_table(ladder, floatfmt=".4f"),
             MINUTES_NOTE, _budget_line(s.ladder, s, len(names)), "",
             "## Table 2: accuracy per class per ε, delta per step, total drop per class", "",
             markdown_table(shown_eps_rows(sweep_shown, s.norm), floatfmt=".3f"),
             SWEEP_NOTE, _budget_line(s.sweep_attack, s, len(names), what="Sweep budget per attack"), "",
             "## Total drop per class, per model and averaged across models", "", markdown_table(across, floatfmt=".3f"),
             markdown_table(shown_per_model, floatfmt=".3f"), *per_model_note,
             "average: the mean of a class's total drop over the models; average total drop: the mean of a model's classes' total drops "
             "(each class counting once, its TOTAL row's average delta); overall total drop: its overall accuracy's change (the TOTAL row's overall).", "",
             "## Worst class and spread per ε", "", markdown_table(shown_summary, floatfmt=".3f"), *summary_note, SPREAD_NOTE, "",
             *_paired_section(results, sweep_eps_text(s.sweep[-1], s.norm), out)]
    for label, res in results.items():
        lines += [f"## Confusion under attack at ε = {sweep_eps_text(s.sweep[-1], s.norm)}: {label}", "",
                  markdown_table(matrix_rows(res["confusion"], names, names, corner="true \\ adv"))]
    lines += ["## Figures", ""] + [f"![{f.name}](<{FIGURES_FOLDER}/{f.name}>)" for f in figures] + [""]
    write_text(out / REPORT_FILE, "\n".join(lines))


def demo_robustness(checkpoints: Dict[str, Path], root: Path, out: Path, seed: int = 0, device: Optional[str] = None,
                    n: int = 64, grid: Sequence[int] = (0, 2, 4)) -> List[str]:
    """The demo's per-class robustness section on ``shapes``: an APGD-CE ε sweep (5 iterations, 1 restart) on ``n``
    test images for each checkpoint (label → path), one run folder each under ``out``; returns the report lines."""
    accs: Dict[str, torch.Tensor] = {}
    rows: List[Dict[str, Any]] = []
    names: List[str] = []
    n = min(n, len(test_split("shapes", root)))
    for label, checkpoint in checkpoints.items():
        s = RobustnessSettings(model="wsol-checkpoint", weights=[str(checkpoint)], dataset="shapes", n=n, seed=seed, eps=grid[-1] / 255,
                               sweep=list(grid), sweep_attack="apgd-ce", batch_size=n, n_iter=5, n_restarts=1)
        result = evaluate_robustness(s, root, out / label, device, show_progress=False, label=label)
        accs[label], names = result["sweep-fp32"]["acc"], result["class_names"]
        rows.extend(result["sweep-fp32"]["summary"])
    shown, tie_note = marked_ties(rows, torch.cat([tied_with_worst(a) for a in accs.values()]), "worst class")
    lines = [f"## Per-class robustness (APGD-CE, 5 iterations, {n} test images, ε = x/255)", "",
             "Accuracies and drops here are fractions of 1, not percent, as in every `wsol robustness` report.", "",
             markdown_table(shown, floatfmt=".3f"), *tie_note, SPREAD_NOTE, "",
             "Total drop per class from ε = 0 to the largest ε, per model and averaged:", "",
             markdown_table(across_models_rows(accs, class_names=names), floatfmt=".3f"),
             "Per-model tables, confusion under attack and figures: " + ", ".join(f"`{out.name}/{k}/report.md`" for k in checkpoints), ""]
    return lines


__all__ = [
    "DEFAULT_EPS", "RobustnessSettings", "StudyModel", "demo_robustness", "eps_text", "evaluate_robustness", "ladder_tables", "load_eval_model", "parse_eps",
    "parse_eps_sweep", "read_study", "refuse_other_run_folder", "sweep_eps_text", "sweep_grid_text", "sweep_radii", "run_chunks", "run_study", "select_samples", "sweep_step_note", "sweep_tables", "write_run_report",
]
