"""`wsol demo`: the whole pipeline on the embedded synthetic set, ending in a Table-2-style report.

Generate `shapes` → train a natural and an ART model → localize with `grad` and `cam` (boxes and
masks, threshold swept) → evaluate → COCO JSON, overlay figures and ``report.md``. Every stage
writes into ``out`` and is skipped when its output already exists, so a re-run resumes.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from wsol.config import LocalizeConfig, configs_dir, load_config
from wsol.data.shapes import ensure_shapes
from wsol.errors import WsolError, option_flag
from wsol.export.tables import Interval, markdown_table
from wsol.jobs.attack import DEMO_COLUMNS, demo_attack_section
from wsol.jobs.evaluate import evaluate_predictions, metric_unit, save_metrics
from wsol.jobs.localize import run_localize
from wsol.jobs.robustness import demo_robustness
from wsol.jobs.runfolder import DEMO_ARGUMENTS_FILE, MODEL_FILE, STATE_FILE, config_differences, finished_epochs, write_json, write_text
from wsol.jobs.train import train
from wsol.jobs.visualize import run_visualize
from wsol.utils.io import remove_folder
from wsol.utils.numbers import counted

METHODS = ("natural", "art")
ATTRIBUTIONS = ("grad", "cam")
TABLE_COLUMNS = ("method", "attribution", "top1_acc", "gt_known_loc", "top1_loc", "maxboxacc_v2", "top1_seg", "pxap", "threshold")
INTERVAL_COLUMNS = ("top1_acc", "gt_known_loc", "top1_loc", "top1_seg")
"""The per-image metrics (a fraction of the images) whose Wilson interval ``wsol evaluate`` gives."""


def _train_model(
    method: str, root: Path, out: Path, epochs: Optional[int], seed: int, device: Optional[str], init: Optional[Path] = None
) -> Tuple[Path, bool]:
    """The stage's checkpoint, and whether this call trained it (False: a finished model was kept). A stage
    warm-started from ``init`` is trained again from the start when ``init`` is newer than its files (retrained since)."""
    checkpoint = out / MODEL_FILE
    if init is not None:
        drop_if_older(init, out)  # fine-tuned from an earlier model of init's: neither kept nor resumed
    path = configs_dir() / f"shapes_small-cnn-bn_{method}.yaml"
    if not path.is_file():
        raise WsolError(f"demo config {path} is missing; run the demo from a wsol source checkout")
    overrides: Dict[str, Any] = {"root": str(root), "seed": seed}
    if init is not None:
        # the natural model stands in for the ART config's warm-up epochs; the ART phase keeps its length
        natural_epochs = epochs if epochs is not None else load_config(configs_dir() / "shapes_small-cnn-bn_natural.yaml").epochs
        shipped = load_config(path)
        overrides.update(warm_start=str(init), warmup_epochs=natural_epochs, epochs=natural_epochs + shipped.epochs - shipped.warmup_epochs)
    elif epochs is not None:
        overrides["epochs"] = epochs
    config = load_config(path, overrides)
    if checkpoint.is_file() and finished_epochs(out / "model.json") >= config.epochs:
        return checkpoint, False
    train(config, out, resume=(out / STATE_FILE).is_file(), device=device)  # a fresh stage is not a resume
    return checkpoint, True


def _written_after(source: Path, *outputs: Path) -> bool:
    """Whether every output exists and was written after ``source`` (a stage whose model has not changed since
    its outputs were written is kept on a rerun)."""
    made = source.stat().st_mtime_ns
    return all(p.is_file() and p.stat().st_mtime_ns >= made for p in outputs)


def drop_if_older(source: Path, folder: Path) -> None:
    """Remove ``folder`` when a file in it is older than ``source``: an attack or robustness run of a model
    retrained since would otherwise resume as finished and report the old model's numbers."""
    if folder.is_dir() and not _written_after(source, *(p for p in folder.rglob("*") if p.is_file())):
        remove_folder(folder)  # renamed aside first: no half-deleted run under its name


def claim_demo_folder(out: Path, arguments: Dict[str, Any]) -> None:
    """Record the demo's arguments in ``out``; a folder holding a demo run with other arguments is refused,
    since its finished stages would otherwise be reused as they are (a model trained for more epochs, say)."""
    path = out / DEMO_ARGUMENTS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise WsolError(f"{path} is unreadable ({exc}); delete it or pass another --out") from None
        diffs = config_differences(old, arguments)
        if diffs:
            said = ", ".join(f"{option_flag(k)} {old.get(k)}" for k in diffs)
            raise WsolError(f"{out} holds a demo run made with {said}; pass another --out or delete the folder")
        return
    write_json(path, arguments)


def run_demo(
    out: Path,
    seed: int = 0,
    epochs: Optional[int] = None,
    n_train: int = 2000,
    n_test: int = 500,
    methods: Sequence[str] = METHODS,
    attributions: Sequence[str] = ATTRIBUTIONS,
    device: Optional[str] = None,
) -> Path:
    """Run the demo into ``out``; returns the path of ``report.md``. One process only: its localize, figure and
    metrics stages write from every process, so under torchrun it is refused before anything is written."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise WsolError("wsol demo runs in one process; start it without torchrun (wsol train, localize, attack and robustness run under torchrun)")
    out = Path(out)
    claim_demo_folder(out, {"seed": seed, "epochs": epochs, "n_train": n_train, "n_test": n_test})
    started = time.time()
    timings: Dict[str, Optional[float]] = {}  # None: the stage's outputs were there and kept
    tick = time.time()
    root = ensure_shapes(out / "shapes", n_train=n_train, n_test=n_test, seed=seed)
    timings["generate shapes"] = time.time() - tick
    rows: List[Dict[str, Any]] = []
    figures: List[str] = []
    natural: Optional[Path] = None
    checkpoints: Dict[str, Path] = {}
    for method in methods:
        tick = time.time()
        checkpoint, trained = _train_model(method, root, out / method, epochs, seed, device, init=None if method == "natural" else natural)
        checkpoints[method] = checkpoint
        if method == "natural":
            natural = checkpoint
        timings[f"train {method}"] = time.time() - tick if trained else None
        for attribution in attributions:
            tick = time.time()
            pred = out / method / f"preds_{attribution}.json"
            figure = out / "figures" / f"{method}_{attribution}.png"
            kept = _written_after(checkpoint, pred, pred.with_suffix(".meta.json"), pred.with_suffix(".metrics.json"), figure)
            if kept:
                metrics = json.loads(pred.with_suffix(".metrics.json").read_text())
            else:
                settings = LocalizeConfig(attribution=attribution, sweep=True, masks=True, batch_size=50)
                meta = run_localize(checkpoint, "shapes", root, pred, settings, device=device)
                metrics = evaluate_predictions(pred, "shapes", root)
                save_metrics(pred, metrics)
                shown = LocalizeConfig(attribution=attribution, threshold=meta["threshold"])
                run_visualize(checkpoint, "shapes", root, figure, shown, n=8, seed=seed, device=device)
            figures.append(figure.relative_to(out).as_posix())
            rows.append({"method": method, "attribution": attribution, **{k: metrics.get(k) for k in TABLE_COLUMNS[2:]},
                         "intervals": metrics.get("intervals", {})})
            timings[f"localize+evaluate {method}/{attribution}"] = None if kept else time.time() - tick
    for method, checkpoint in checkpoints.items():
        drop_if_older(checkpoint, out / "attack" / method)
        drop_if_older(checkpoint, out / "robustness" / method)
    tick = time.time()
    attack_rows = demo_attack_section(checkpoints, root, out / "attack", seed=seed, device=device)
    attack_rows_paired = _paired_lines(out / "attack", list(checkpoints))
    timings["attributional robustness (IFIA-grad)"] = time.time() - tick
    tick = time.time()
    robustness = demo_robustness(checkpoints, root, out / "robustness", seed=seed, device=device)
    timings["per-class robustness"] = time.time() - tick
    report = out / "report.md"
    write_text(report, _report_text(rows, figures, timings, time.time() - started, n_train, n_test, attack_rows, robustness,
                                    attack_rows_paired))
    return report


def _paired_lines(attack_out: Path, methods: Sequence[str]) -> List[str]:
    """The report's sentence on whether the later models' IN and K differ from the first's, sample by sample."""
    from wsol.report.attack import load_runs, paired_rows

    rows, _ = paired_rows(load_runs([attack_out / m for m in methods])) if len(methods) > 1 else ([], [])
    return [f"Paired, {r['run']} minus {r['against']} on the {counted(r['n paired'], 'sample')} both scored: {_paired_part('IN', r)}, {_paired_part('K', r)} "
            "percentage points (95% t-interval; one that holds 0 is no difference these samples can show)." for r in rows if r["n paired"]]


def _paired_part(metric: str, row: Dict[str, Any]) -> str:
    """``IN +1.50 [0.50, 2.50]`` from a paired row, or that no sample has the metric (a constant map has no Kendall τ)."""
    mean, ci = row[f"Δ{metric} (points)"], row[f"Δ{metric} 95% CI"]
    return f"{metric} " + (f"{mean:+.2f} {f'{ci:.2f}' if ci.defined else '(no interval)'}" if math.isfinite(mean) else "– (no sample has it)")


def _interval_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per method and attribution, the 95% interval of each per-image metric (an :class:`Interval`; None where evaluate gave none)."""
    return [{"method": r["method"], "attribution": r["attribution"],
             **{k: Interval(*r["intervals"][k]) if k in r.get("intervals", {}) else None for k in INTERVAL_COLUMNS}}
            for r in rows]


def _report_text(
    rows: List[Dict[str, Any]], figures: List[str], timings: Dict[str, Optional[float]], total: float, n_train: int, n_test: int,
    attack_rows: Sequence[Dict[str, Any]] = (), robustness: Sequence[str] = (), attack_paired: Sequence[str] = (),
) -> str:
    lines = [
        "# wsol demo report",
        "",
        f"Synthetic `shapes` set ({n_train} train / {n_test} test, 64×64, 10 classes): each object is a large",
        "body whose class is told by a small mark on one part of it; the GT box and mask cover the whole body.",
        "Models: small CNN trained naturally, then fine-tuned from that model with ART (as ART fine-tunes a",
        "pretrained network on CUB): the natural run is the ART config's warm-up; configs",
        "`shapes_small-cnn-bn_{natural,art}.yaml`.",
        "Maps for the predicted class; post-processing gray → min-max → 3×3 mean; boxes from the largest",
        "region. GT-Known / Top-1 Loc and Top-1 Seg use the threshold with the best GT-Known Loc on this",
        "split (an oracle choice, as in the ART and CAM papers); MaxBoxAccV2 and PxAP sweep all thresholds.",
        f"All numbers in percent over the {n_test} test images (the threshold: a fraction of each map's maximum), measured in this run.",
        "",
        markdown_table(rows, list(TABLE_COLUMNS), headers={c: f"{c} ({metric_unit(c)})" for c in TABLE_COLUMNS[2:]}),
        "95% Wilson intervals over the test images (a difference inside them is not one this split can tell):",
        "",
        markdown_table(_interval_rows(rows), ["method", "attribution", *INTERVAL_COLUMNS], floatfmt=".1f", headers={c: f"{c} (%)" for c in INTERVAL_COLUMNS}),
        "",
        "## Figures (GT box red, predicted box green, GT mask outlined white)",
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    if attack_rows:
        lines += ["", "## Attributional robustness (IFIA-grad top-k: k = 100, ε = 8/255, 10 steps of 1/255)", "",
                  "Top-k intersection (IN) and Kendall τ (K) between the gradient map of each correctly classified",
                  "test sample and of its attacked copy (label kept), in percent, mean with 95% t-interval; higher",
                  "is more robust. Per-sample rows in `attack/<method>/samples.csv`.", "", markdown_table(list(attack_rows), list(DEMO_COLUMNS), headers={"IN": "IN (%)", "K": "K (%)"}),
                  *attack_paired]
    lines += ["", *robustness, "## Time", ""]
    lines += [f"- {name}: " + ("done before, kept" if seconds is None else f"{seconds:.1f} s") for name, seconds in timings.items()]
    lines += [f"- total: {total:.1f} s on {platform.machine()} with {counted(torch.get_num_threads(), 'torch thread')}", ""]
    return "\n".join(lines)
