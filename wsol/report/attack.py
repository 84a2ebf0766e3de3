"""Tables and figures from attack run folders (``samples.csv`` + ``summary.json`` + ``maps.npz``).

Table 1 of the ART paper (method, IN, K, natural and PGD-40 accuracy); Fig. 11 (box plots of IN
and K per model), Fig. 12 (IN and K against ε for runs of the same model), Fig. 6 (distribution of
cos(x, g^y(x))) and original vs attacked maps for the first samples of each run.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from wsol.utils.numbers import parse_number
from wsol.errors import ConfigError, DataError
from wsol.export.tables import markdown_table, write_csv
from wsol.metrics.intervals import interval_cell, paired_difference
from wsol.report.figures import pyplot, save_figure
from wsol.runfiles import ATTACK_RUN_FILES, CHECKPOINT_DIGEST, MAPS_FILE, SAMPLES_FILE, SUMMARY_FILE, dataset_label
from wsol.utils.io import atomic_write_text

TABLE1_COLUMNS = ("run", "dataset", "method", "attribution", "preset", "samples", "n IN/K", "IN (%)", "IN 95% CI", "K (%)", "K 95% CI",
                  "natural acc (%)", "PGD acc (%)")
"""``samples``: the samples drawn, which the accuracies are over; ``n IN/K``: those IN and K are averaged over
(attacked, and some step kept the label). The units are in the names, so the CSV says them too."""


@dataclass
class AttackRun:
    """One attack run folder as read back: its summary and per-sample columns (floats; NaN where empty)."""

    folder: Path
    summary: Dict[str, Any]
    columns: Dict[str, np.ndarray]

    @property
    def config(self) -> Dict[str, Any]:
        return self.summary.get("config", {})

    @property
    def method(self) -> str:
        """The training method recorded in the checkpoint, else the run folder's name."""
        return str(self.config.get("method") or self.folder.name)

    @property
    def label(self) -> str:
        """A short legend label: method and attribution."""
        return f"{self.method} / {self.config.get('attribution', '?')}"


def _float(value: str) -> float:
    if value in ("True", "False"):
        return float(value == "True")
    try:
        return float(value)
    except ValueError:
        return float("nan")


def load_run(folder: Path) -> AttackRun:
    """Read a run folder written by `wsol attack attribution`; anything else (no or a broken ``summary.json``,
    a targeted run) is a one-line error."""
    folder = Path(folder)
    summary_path, samples_path = folder / SUMMARY_FILE, folder / SAMPLES_FILE
    if samples_path.is_file() and not summary_path.is_file():
        raise DataError(f"{folder} holds an attack run that has not finished (samples.csv, no summary.json yet): wait for it to end, "
                        "or if it was interrupted rerun the same `wsol attack` command to finish it")
    wanted = "give a folder that `wsol attack attribution --out` wrote (it holds summary.json and samples.csv)"
    if not folder.exists():
        raise DataError(f"attack run folder not found: {folder}; {wanted}")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not an attack run folder; {wanted}")
    if not summary_path.is_file() or not samples_path.is_file():
        raise DataError(f"{folder} is not a finished attack run (no summary.json or samples.csv); {wanted}")
    try:
        summary = json.loads(summary_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{summary_path} is not valid JSON; rerun the same `wsol attack attribution` command to rewrite it") from None
    kind = summary.get("config", {}).get("attack") if isinstance(summary, dict) else None
    if kind != "attribution" or not isinstance(summary.get("metrics"), dict):
        raise DataError(f"{folder} holds a {kind or 'non-attack'} run, not an attribution-attack run; the report reads `wsol attack attribution` folders")
    missing = [name for name in ("topk_intersection", "kendall") if not isinstance(summary["metrics"].get(name), dict)]
    if missing:
        raise DataError(f"{summary_path} has no {' or '.join(missing)} in its metrics; rerun the same `wsol attack attribution` command to rewrite it")
    rows = list(csv.DictReader(io.StringIO(samples_path.read_text())))
    names = rows[0].keys() if rows else []
    columns = {name: np.array([_float(r[name]) for r in rows]) for name in names if name not in ("reason",)}
    return AttackRun(folder, summary, columns)


def _stat(stats: Dict[str, Any], key: str) -> float:
    """One number of a summary's metric entry; NaN where it is undefined (None, or NaN in older summaries)."""
    value = stats.get(key)
    return float("nan") if value is None else float(value)


def load_runs(folders: Sequence[Path]) -> List[AttackRun]:
    """:func:`load_run` for each folder, a folder named twice (``runs/a`` and ``runs/a/``) read once."""
    first: Dict[Path, Path] = {}
    for folder in folders:
        first.setdefault(Path(folder).resolve(), Path(folder))
    return [load_run(folder) for folder in first.values()]


def run_names(runs: Sequence[AttackRun]) -> List[str]:
    """A distinct short name per run: its folder name, or its path below the runs' common folder when two folder names clash."""
    names = [run.folder.name for run in runs]
    if len(set(names)) == len(names):
        return names
    paths = [run.folder.resolve() for run in runs]
    common = Path(os.path.commonpath(paths))
    return ["_".join(p.relative_to(common).parts) for p in paths]


def table1_rows(runs: Sequence[AttackRun]) -> List[Dict[str, Any]]:
    """One row per run: dataset, method, attribution, preset, n, IN and K (percent, mean and 95% interval),
    natural and PGD accuracy (percent)."""
    rows = []
    for run, name in zip(runs, run_names(runs)):
        m = run.summary["metrics"]
        rows.append({
            "run": name, "dataset": run.config.get("dataset"), "method": run.method, "attribution": run.config.get("attribution"),
            "preset": run.config.get("preset"), "samples": run.summary.get("total"), "n IN/K": m["topk_intersection"].get("n"),
            "IN (%)": _stat(m["topk_intersection"], "mean"), "IN 95% CI": interval_cell(m["topk_intersection"]),
            "K (%)": _stat(m["kendall"], "mean"), "K 95% CI": interval_cell(m["kendall"]),
            "natural acc (%)": run.summary.get("natural_accuracy"), "PGD acc (%)": run.summary.get("pgd_accuracy"),
        })
    return rows


PAIRED_COLUMNS = ("run", "against", "n paired", "ΔIN (points)", "ΔIN 95% CI", "ΔK (points)", "ΔK 95% CI")
"""The paired table: each run minus the first on the samples both scored (same dataset index), in percentage points."""


def _percent_by_sample(run: AttackRun, metric: str) -> Dict[int, float]:
    """A run's per-sample ``metric`` (a fraction in samples.csv) in percent, by dataset index; NaN where it has none."""
    return {int(i): 100.0 * v for i, v in zip(run.columns.get("index", []), run.columns.get(metric, []))}


def paired_rows(runs: Sequence[AttackRun]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Each later run's IN and K minus the first run's, per sample on the samples both scored, with a paired 95%
    t-interval: whether one model's explanations are more robust than another's, which two overlapping per-run
    intervals cannot say. Runs on another dataset or split than the first are left out (returned as notes): the same
    index there is another image."""
    names = run_names(runs)
    rows, notes = [], []
    first = runs[0]
    base = {m: _percent_by_sample(first, m) for m in ("topk_intersection", "kendall")}

    def where(run: AttackRun) -> str:
        return f"{dataset_label(run.config.get('dataset'), run.config.get('dataset_options'))} {run.config.get('split', 'test')}"

    for run, name in zip(runs[1:], names[1:]):
        if where(run) != where(first):
            notes.append(f"{name} is on {where(run)}, {names[0]} on {where(first)}: no samples to pair")
            continue
        if run.config.get("root") != first.config.get("root"):
            notes.append(f"{name} read {run.config.get('root')}, {names[0]} {first.config.get('root')}: pairing by dataset index "
                         "assumes both folders hold the same images")
        d_in = paired_difference(base["topk_intersection"], _percent_by_sample(run, "topk_intersection"))
        d_k = paired_difference(base["kendall"], _percent_by_sample(run, "kendall"))
        count = d_in["n"] if d_in["n"] == d_k["n"] else f"{d_in['n']} IN / {d_k['n']} K"  # a constant map has no Kendall τ
        rows.append({"run": name, "against": names[0], "n paired": count,
                     "ΔIN (points)": _stat(d_in, "mean"), "ΔIN 95% CI": interval_cell(d_in),
                     "ΔK (points)": _stat(d_k, "mean"), "ΔK 95% CI": interval_cell(d_k)})
    return rows, notes


TABLE1_FREE = ("batch_size", "n_maps", "root", "checkpoint", CHECKPOINT_DIGEST, "method", "arch", "dataset", "dataset_options", "attribution", "preset", "n", "seed")
"""Arguments runs may differ in and still be compared row by row (the table shows or does not depend on them)."""


def inert_arguments(config: Dict[str, Any]) -> Set[str]:
    """Arguments recorded in an attack run's ``config.json`` that cannot change its results: ``ig_steps`` unless the
    attribution is ig, the PGD radius and step when ``pgd_steps`` is 0. A rerun may change them (old folders, which
    record them with their defaults, stay resumable)."""
    inert = set() if config.get("attribution") == "ig" else {"ig_steps"}
    if config.get("pgd_steps") == 0:
        inert |= {"pgd_eps", "pgd_step_size"}
    return inert


def setting_differences(runs: Sequence[AttackRun]) -> List[str]:
    """Attack arguments (k, ε, steps, objective, ...) that differ between ``runs``: their IN and K are then measured
    under different attacks, which the table's columns do not show. An argument without effect in a run
    (:func:`inert_arguments`) is not compared there."""
    keys = sorted({k for run in runs for k in run.config} - set(TABLE1_FREE))
    return [k for k in keys if len({json.dumps(run.config.get(k), default=str) for run in runs if k not in inert_arguments(run.config)}) > 1]


TABLE1_FORMATS = {".csv": "CSV", ".md": "Markdown"}
"""The files ``table1`` writes, by the extension of the path it is given."""


def check_table1_out(out: Path) -> Path:
    """Refuse a Table 1 file whose extension names no format it writes (a ``.txt`` or a name without extension)."""
    if out.suffix.lower() not in TABLE1_FORMATS:
        raise ConfigError(f"--out {out} must end in .csv (CSV) or .md (Markdown): the extension chooses the format of the table")
    return out


def table1(folders: Sequence[Path], out: Optional[Path] = None, paired: bool = False) -> Tuple[str, List[str]]:
    """Table 1 as Markdown and, with ``out``, written to that file as CSV (``.csv``) or Markdown (``.md``); returns
    the Markdown and notes for the reader (runs attacked with different arguments). ``paired``: the Markdown also
    has the paired differences against the first run (:func:`paired_rows`). An ``out`` that is one of the
    runs' own files, or has another extension, is refused."""
    if out is not None:
        check_table1_out(Path(out))
    runs = load_runs(folders)
    if out is not None:
        target = Path(out).resolve()
        for run in runs:
            if target.parent == run.folder.resolve() and target.name in ATTACK_RUN_FILES:
                raise DataError(f"--out {out} is the {target.name} of run {run.folder}; writing the table there would destroy the run; "
                                "give another file, e.g. table1.csv")
    rows = table1_rows(runs)
    differ = setting_differences(runs)
    notes = [f"the runs differ in {', '.join(differ)}, which the table does not show; each run's config.json has its arguments"] if differ else []
    text = markdown_table(rows, TABLE1_COLUMNS)
    if paired:
        if len(runs) < 2:
            raise ConfigError("--paired compares each run with the first: give at least two different run folders (a folder named twice is read once)")
        pairs, pair_notes = paired_rows(runs)
        notes += pair_notes
        if pairs:
            text += ("\nPaired differences against the first run (its samples' IN and K subtracted sample by sample, on the samples "
                     "both scored; percentage points, 95% t-interval; an interval without 0 is a difference these samples show):\n\n"
                     + markdown_table(pairs, PAIRED_COLUMNS))
    if out is not None and Path(out).suffix.lower() == ".md":
        atomic_write_text(out, text)
    elif out is not None:
        write_csv(out, rows, TABLE1_COLUMNS)
        if paired:
            notes.append(f"the paired table is on stdout only: the CSV {out} holds Table 1's rows (a .md --out holds both)")
    return text, notes


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


METRIC_PANELS = (("topk_intersection", "top-k intersection"), ("kendall", "Kendall τ"))
"""The two metrics of Fig. 11 and Fig. 12, in panel order: (samples.csv column, axis label)."""


def _attack_text(runs: Sequence[AttackRun], keys: Sequence[str] = ("objective", "k", "eps", "steps")) -> str:
    """The attack arguments all ``runs`` share, for a title (e.g. ``topk, k=100, ε=8/255, 10 steps``)."""
    parts = []
    for key in keys:
        values = {json.dumps(run.config.get(key), default=str) for run in runs}
        if len(values) != 1 or runs[0].config.get(key) is None:
            continue
        value = runs[0].config[key]
        parts.append({"objective": f"{value}", "k": f"k={value}", "eps": f"ε={value}", "steps": f"{value} steps"}[key])
    return ", ".join(parts)


def draw_box_plots(runs: Sequence[AttackRun]) -> Any:
    """Fig. 11: box plots of top-k intersection and Kendall τ (percent) per run, each run's sample count under
    its box; returns the Figure."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 1.6 * len(runs), 3.6), squeeze=False, layout="constrained")
    for ax, (name, label) in zip(axes[0], METRIC_PANELS):
        values = [100 * _finite(r.columns.get(name, np.array([]))) for r in runs]
        ax.boxplot(values)
        for position, v in enumerate(values, start=1):
            if not len(v):
                ax.text(position, 0.5, "no attacked\nsample", ha="center", va="center", fontsize=7, transform=ax.get_xaxis_transform())
        ticks = [f"{run_name}\n{r.label}\nn={len(v)}" for run_name, r, v in zip(run_names(runs), runs, values)]
        ax.set_xticks(range(1, len(runs) + 1), ticks, rotation=30, ha="right", rotation_mode="anchor", fontsize=7)
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(label, fontsize=9)
    attack = _attack_text(runs)
    fig.suptitle("Fig. 11: attributional robustness per run" + (f" ({attack})" if attack else ""), fontsize=10)
    return fig


def box_plots(runs: Sequence[AttackRun], path: Path) -> Path:
    """:func:`draw_box_plots` written as PNG to ``path``."""
    return save_figure(draw_box_plots(runs), path)


SWEEP_FREE = ("eps", "step_size", "batch_size", "n_maps", "root", "pgd_steps", "pgd_eps", "pgd_step_size", CHECKPOINT_DIGEST)
"""Arguments runs of one ε-sweep line may differ in: ε, its step and bookkeeping that does not change IN or K."""


def sweep_lines(runs: Sequence[AttackRun]) -> List[List[Tuple[float, AttackRun]]]:
    """Runs that differ only in ε (and :data:`SWEEP_FREE`), sorted by ε: the lines of Fig. 12 (two ε at least each)."""
    groups: Dict[str, List[Tuple[float, AttackRun]]] = defaultdict(list)
    for run in runs:
        key = json.dumps({k: v for k, v in run.config.items() if k not in SWEEP_FREE}, sort_keys=True, default=str)
        groups[key].append((parse_number(run.config.get("eps", "nan"), "eps"), run))
    return [sorted(members, key=lambda t: t[0]) for members in groups.values() if len({e for e, _ in members}) > 1]


def draw_eps_sweep(runs: Sequence[AttackRun]) -> Optional[Any]:
    """Fig. 12: mean IN and K (95% interval bars) against ε (×1/255), one line per :func:`sweep_lines` group and
    one legend under both panels; the Figure, or None when no two runs differ in ε alone."""
    lines = sweep_lines(runs)
    if not lines:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), squeeze=False, layout="constrained")
    for members in lines:
        eps = [255 * e for e, _ in members]
        for ax, (name, _) in zip(axes[0], METRIC_PANELS):
            stats = [r.summary["metrics"][name] for _, r in members]
            mean = np.array([_stat(s, "mean") for s in stats])
            err = np.array([[_stat(s, "mean") - _stat(s, "ci_low"), _stat(s, "ci_high") - _stat(s, "mean")] for s in stats]).T
            ax.errorbar(eps, mean, yerr=np.nan_to_num(err), marker="o", capsize=3, label=members[0][1].label)
    for ax, (_, label) in zip(axes[0], METRIC_PANELS):
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize=7)
    attack = _attack_text(runs, ("objective", "k", "steps"))
    fig.suptitle("Fig. 12: attributional robustness against ε, mean and 95% interval" + (f" ({attack})" if attack else ""), fontsize=10)
    return fig


def eps_sweep(runs: Sequence[AttackRun], path: Path) -> Optional[Path]:
    """:func:`draw_eps_sweep` written as PNG to ``path``; None (nothing written) when there is no sweep."""
    fig = draw_eps_sweep(runs)
    return None if fig is None else save_figure(fig, path)


def draw_cosine_histograms(runs: Sequence[AttackRun]) -> Any:
    """Fig. 6: the distribution of cos(x, g^y(x)) per model (one histogram per checkpoint); returns the Figure."""
    plt = pyplot()
    seen: Dict[Any, Tuple[str, AttackRun]] = {}
    for run, name in zip(runs, run_names(runs)):
        seen.setdefault(run.config.get("checkpoint", run.folder), (name, run))
    methods = [run.method for _, run in seen.values()]
    from matplotlib.ticker import MaxNLocator

    values = {name: _finite(run.columns.get("cos_x_grad", np.array([]))) for name, run in seen.values()}
    pooled = np.concatenate(list(values.values()))
    bins = np.histogram_bin_edges(pooled, bins=20) if pooled.size else 20
    fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    for name, run in seen.values():
        label = run.method if methods.count(run.method) == 1 else f"{run.method} ({name})"
        ax.hist(values[name], bins=bins, histtype="stepfilled", alpha=0.45, edgecolor="black", linewidth=0.6,
                label=f"{label}, n={len(values[name])}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cos(x, ∇ₓ logit_y)")
    ax.set_ylabel("samples (count)")
    ax.set_title("Fig. 6: alignment of input and gradient per model", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def cosine_histograms(runs: Sequence[AttackRun], path: Path) -> Path:
    """:func:`draw_cosine_histograms` written as PNG to ``path``."""
    return save_figure(draw_cosine_histograms(runs), path)


MAP_PANELS = (("image", "image"), ("original_map", "original map"), ("x_adv", "attacked image"), ("attacked_map", "attacked map"))
"""The columns of the maps figure, in order: (maps.npz array, column title)."""
MAX_MAP_ROWS = 16
"""Attacked samples the maps figure draws at most: a run of many kept maps (``--n-maps 500``) made a figure taller
than a PNG can be (matplotlib refuses images over 2^16 pixels) and unreadable long before that."""


def draw_map_pairs(run: AttackRun, name: str = "") -> Optional[Any]:
    """Image, original map, attacked image and attacked map for the attacked samples kept in ``maps.npz`` (samples
    left unattacked, e.g. misclassified, have no maps and are left out; the first MAX_MAP_ROWS of them); both maps of a row share one colour
    scale, shown by a colour bar. The Figure, or None without ``maps.npz`` or without an attacked sample in it."""
    source = run.folder / MAPS_FILE
    if not source.is_file():
        return None
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    panels = [(key, title) for key, title in MAP_PANELS if key in arrays]
    maps = [key for key, _ in panels if key.endswith("_map")]
    rows = [i for i in range(len(arrays["index"])) if maps and all(np.isfinite(arrays[k][i]).any() for k in maps)]
    if not rows:
        return None
    shown = f"first {MAX_MAP_ROWS} of {len(rows)} attacked samples, " if len(rows) > MAX_MAP_ROWS else ""
    rows = rows[:MAX_MAP_ROWS]
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(1.9 * len(panels) + 0.6, 1.9 * len(rows) + 0.4), squeeze=False,
                             layout="constrained")
    for r, i in enumerate(rows):
        finite = np.concatenate([arrays[k][i][np.isfinite(arrays[k][i])] for k in maps])
        low, high = float(finite.min()), float(finite.max())
        image = None
        for j, (key, title) in enumerate(panels):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            value = arrays[key][i]
            if value.ndim == 3:
                ax.imshow(np.clip(value.transpose(1, 2, 0), 0, 1), interpolation="nearest")
            else:
                image = ax.imshow(value, cmap="jet", interpolation="nearest", vmin=low, vmax=high if high > low else low + 1)
            if r == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"sample {int(arrays['index'][i])}", fontsize=7)
        if image is not None:
            fig.colorbar(image, ax=axes[r, -1], shrink=0.9).ax.tick_params(labelsize=6)
    fig.suptitle(f"original vs attacked maps: {name or run.folder.name} ({shown}{run.label})", fontsize=9)
    return fig


def map_pairs(run: AttackRun, path: Path, name: str = "") -> Optional[Path]:
    """:func:`draw_map_pairs` written as PNG to ``path``; None (nothing written) when there is nothing to draw."""
    fig = draw_map_pairs(run, name)
    return None if fig is None else save_figure(fig, path)


def attack_figures(folders: Sequence[Path], out: Path) -> Tuple[List[Path], List[str]]:
    """Every figure for ``folders`` into ``out``: the files written and a note for each figure left out."""
    runs = load_runs(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [box_plots(runs, out / "fig11_boxplots.png")]
    notes = []
    sweep = eps_sweep(runs, out / "fig12_eps_sweep.png")
    if sweep is None:
        stale = out / "fig12_eps_sweep.png"
        removed = stale.is_file()
        if removed:  # an earlier call's sweep of other runs would pass for one of these
            stale.unlink()
        notes.append("no ε sweep (fig12_eps_sweep.png" + (", the earlier one removed" if removed else "") + "): it needs runs that differ in --eps alone")
    else:
        written.append(sweep)
    written.append(cosine_histograms(runs, out / "fig6_cosine.png"))
    for run, name in zip(runs, run_names(runs)):
        pair = map_pairs(run, out / f"maps_{name}.png", name)
        if pair is None and not (run.folder / MAPS_FILE).is_file():
            notes.append(f"no maps for {run.folder}: it holds no maps.npz")
        elif pair is None:
            notes.append(f"no maps for {run.folder}: none of the samples kept in its maps.npz (the first "
                         "few drawn) was attacked: the model misclassified them all")
        else:
            written.append(pair)
    left = sorted(p.name for p in out.glob("maps_*.png") if p not in written)
    if left:  # figures of an earlier call's runs would pass for these runs' (left in place: the folder is the user's)
        notes.append(f"{out} also holds {', '.join(left)} from an earlier call, of runs not given now")
    return written, notes


__all__ = ["AttackRun", "attack_figures", "box_plots", "cosine_histograms", "draw_box_plots", "draw_cosine_histograms", "draw_eps_sweep",
           "draw_map_pairs", "eps_sweep", "load_run", "load_runs", "map_pairs", "run_names", "sweep_lines", "table1", "table1_rows"]
