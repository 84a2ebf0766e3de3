"""The `wsol` command line: parse options, build a config, call one job (wsol.jobs). No logic here."""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import typer
from typing_extensions import Annotated

import wsol
from wsol.errors import WsolError
from wsol.utils.numbers import MAX_SEED

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Attributional robustness and weakly supervised localization.")
data_app = typer.Typer(no_args_is_help=True, help="Generate, check and look at datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
robustness_app = typer.Typer(no_args_is_help=True, help="Adversarial robustness: AutoAttack ladder, PGD, per-class ε sweeps, studies.")
app.add_typer(robustness_app, name="robustness")
attack_app = typer.Typer(no_args_is_help=True, help="Attack attribution maps (IFIA, targeted manipulation) and record per-sample metrics.")
report_app = typer.Typer(no_args_is_help=True, help="Tables and figures from attack run folders.")
app.add_typer(attack_app, name="attack")
app.add_typer(report_app, name="report")


# --- options shared by several commands: one definition, the same name, type and help everywhere ---


def _check_device(value: Optional[str]) -> Optional[str]:
    """Refuse an unusable ``--device`` while parsing, before any data or model is loaded."""
    from wsol.utils.device import select_device

    if value is not None:
        select_device(value)
    return value


def _check_out_file(value: Optional[Path]) -> Optional[Path]:
    """Refuse an ``--out`` file that cannot be written (existing folder, parent a file, read-only) or is a run's own file."""
    from wsol.jobs.runfolder import refuse_run_file
    from wsol.utils.io import check_writable_output

    if value is None:
        return None
    check_writable_output(value, "file")
    refuse_run_file(value)
    return value


def _check_out_suffix(value: Path, suffix: str, what: str, example: str) -> Path:
    """Refuse an ``--out`` file whose name says another format than the one written into it; an existing folder is
    told a file name in it that works (``example``), not one the suffix rule would refuse next."""
    if value.is_dir():
        raise WsolError(f"cannot write {value}: it is an existing folder; give a file path, e.g. {value / example}")
    _check_out_file(value)
    if value.suffix.lower() != suffix:
        raise WsolError(f"--out {value} must end in {suffix}: {what}")
    return value


def _check_out_png(value: Path) -> Path:
    """``--out`` of a figure: a writable ``.png`` path."""
    return _check_out_suffix(value, ".png", "the figure is written as PNG", "grid.png")


def _check_out_json(value: Path) -> Path:
    """``--out`` of predictions: a writable ``.json`` path (``.meta.json`` and ``.metrics.json`` go beside it), not named
    as one of those: ``--out preds.meta.json`` would replace the record of ``preds.json`` and break that pair."""
    _check_out_suffix(value, ".json", "the predictions are written as COCO results JSON", "preds.json")
    for sidecar in (".meta.json", ".metrics.json"):
        if value.name.endswith(sidecar) and len(value.name) > len(sidecar):
            results = value.with_name(value.name[: -len(sidecar)] + ".json")
            raise WsolError(f"--out {value} is named as the {sidecar} file that goes beside the results file {results}; "
                            f"give the results file's own name, e.g. --out {results}")
    return value


def _check_table1_out(value: Optional[Path]) -> Optional[Path]:
    """``--out`` of Table 1: a writable ``.csv`` or ``.md`` path (its extension chooses the format)."""
    from wsol.report.attack import check_table1_out

    return None if value is None else _check_out_file(check_table1_out(value))


def _check_out_folder(value: Optional[Path]) -> Optional[Path]:
    """Refuse an ``--out`` folder that cannot be written (existing file, parent a file, read-only)."""
    from wsol.utils.io import check_writable_output

    return None if value is None else check_writable_output(value, "folder")


def _not_rank_0() -> bool:
    """Whether this process is a torchrun rank other than 0: a one-process command (evaluate, visualize) leaves its work to
    rank 0 there, instead of every rank writing the same file and printing the same lines."""
    from wsol.utils.launch import launched_rank

    return launched_rank() != 0


REPLACING = "replacing the earlier file"


def _replacing(existed: bool) -> str:
    """What a ``wrote PATH`` line adds when the file was there before: every ``--out`` file is replaced, and says so."""
    return f" ({REPLACING})" if existed else ""


def _check_pred(value: Path) -> Path:
    """``evaluate`` reads ``--pred`` and writes ``<pred>.metrics.json`` beside it: the file must exist, its folder be writable."""
    from wsol.utils.io import check_writable_output

    if value.is_dir():
        from wsol.export.coco import meta_path

        written = sorted(str(p) for p in value.glob("*.json") if meta_path(p).is_file())
        hint = f"it holds {', '.join(written)}" if written else f"e.g. {value / 'preds.json'}"
        raise WsolError(f"--pred {value} is a folder; give the COCO results file `wsol localize --out` wrote: {hint}")
    if not value.is_file():
        raise WsolError(f"predictions file not found: {value}; write it with `wsol localize --out {value}`")
    check_writable_output(value.parent, "folder")
    return value


DATASET_HELP = "Dataset name: shapes, cub, wsolmeta, coco, cifar10, cifar10c, svhn, gtsrb, flowers17, flowers102."

DeviceOpt = Annotated[Optional[str], typer.Option("--device", callback=_check_device, help="cpu, cuda, cuda:N or auto (default: cuda when available).")]
RootOpt = Annotated[Optional[Path], typer.Option("--root", help="Dataset folder (shapes: defaults to the generated cache).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed (≥ 0); the same seed gives the same result.")]
ConfigSeedOpt = Annotated[Optional[int], typer.Option("--seed", min=0, max=MAX_SEED,
                                                      help="Random seed (≥ 0); the same seed gives the same result (default: the config's).")]
SplitOpt = Annotated[str, typer.Option("--split", help="Dataset split: train or test (wsolmeta and flowers also val; see datasets/README.md).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
RobustBatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, show_default=False, help="Images per batch (default: 250; also the chunk a run writes and "
                                                                           "resumes by, and AutoAttack's batching, so it is part of the run: "
                                                                           "another --batch-size into the same --out is refused).")]
ConfigBatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch (default: the config's; under torchrun the global batch, split across processes).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", help=DATASET_HELP)]
DatasetArg = Annotated[str, typer.Argument(help=DATASET_HELP)]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="A wsol checkpoint (.safetensors with its .json).")]
AttributionOpt = Annotated[str, typer.Option("--attribution", help="Attribution method: grad, ig, gradshap, smoothgrad, cam, gradcam, gradcampp (attacks: the first four).")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", help="Box/mask threshold as a fraction of each map's max, in [0, 1): pixels above it are kept.")]
LoaderOpt = Annotated[Optional[List[str]], typer.Option("--option", "-o", help="Dataset loader option KEY=VALUE (repeatable), e.g. -o metadata=DIR for wsolmeta, -o corruption=fog -o severity=5 for cifar10c; see datasets/README.md.")]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", help="Override a config key, e.g. --set art.lam=0.3 (repeatable).")]
OutFolderOpt = Annotated[Path, typer.Option("--out", callback=_check_out_folder, help="Folder to write (created if missing).")]
OutPngOpt = Annotated[Path, typer.Option("--out", callback=_check_out_png, help="PNG file to write.")]
OutPredOpt = Annotated[Path, typer.Option("--out", callback=_check_out_json, help="COCO results file to write, ending in .json (a .meta.json goes beside it).")]


def _loader_options(option: Optional[List[str]]) -> Dict[str, Any]:
    """The ``-o KEY=VALUE`` loader options as keyword arguments of the dataset's loader."""
    from wsol.data.verify import parse_loader_options

    return parse_loader_options(option or [])


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wsol {wsol.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """wsol: train robust classifiers, turn attributions into boxes and masks, and score them."""


# --- foundation commands ---


@app.command("models")
def models_command() -> None:
    """List the architectures `--arch` accepts and the evaluation models `--model` loads from local files."""
    from wsol.models.build import MODELS, arch_spec
    from wsol.models.robustbench import describe_robust_model, robust_model_names

    typer.echo("architectures (wsol train --arch):")
    for name in MODELS.names():
        spec = arch_spec(name)
        typer.echo(f"  {name:<16} input {spec.input_size:>3}px  {spec.description}")
    typer.echo("evaluation models (wsol robustness evaluate|per-class --model NAME --weights FILE; a study lists them in its YAML):")
    for name in robust_model_names():
        typer.echo(f"  {name:<28} {describe_robust_model(name)}")


@config_app.command("show")
def config_show(
    file: Annotated[Optional[Path], typer.Argument(help="YAML config, e.g. configs/shapes_small-cnn-bn_art.yaml; omit for the built-in defaults (not a shipped config).")] = None,
    overrides: SetOpt = None,
) -> None:
    """Print the resolved, validated configuration."""
    from wsol.config import config_to_yaml, load_config, parse_overrides

    typer.echo(config_to_yaml(load_config(file, parse_overrides(overrides))), nl=False)


# --- data commands ---


@data_app.command("synth")
def data_synth(
    kind: Annotated[str, typer.Argument(help="Synthetic set to generate: shapes.")],
    out: Annotated[Optional[Path], typer.Option("--out", callback=_check_out_folder, help="Folder to write (default: $XDG_CACHE_HOME/wsol/shapes).")] = None,
    n_train: Annotated[int, typer.Option("--n-train", help="Training images (at least 1).")] = 2000,
    n_test: Annotated[int, typer.Option("--n-test", help="Test images (at least 1).")] = 500,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels (32-1024).")] = 64,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Number of classes (2-40).")] = 10,
    seed: SeedOpt = 0,
) -> None:
    """Generate a synthetic WSOL set in CUB-200-2011's on-disk format (without --out: the default set, into the cache)."""
    from wsol.data.shapes import check_cache_params, default_shapes_root, synthesize_shapes
    from wsol.errors import UnknownNameError

    if kind != "shapes":
        raise UnknownNameError(f"unknown synthetic dataset {kind!r}; choose one of: shapes")
    if out is None:
        check_cache_params(n_train=n_train, n_test=n_test, size=size, num_classes=num_classes, seed=seed)
    target = out or default_shapes_root()
    existed = target.is_dir() and any(target.iterdir())
    root = synthesize_shapes(target, n_train=n_train, n_test=n_test, size=size, num_classes=num_classes, seed=seed)
    replaced = " (replacing the earlier set)" if existed else ""
    typer.echo(f"wrote {n_train} train + {n_test} test images ({size}x{size}, {num_classes} classes) to {root}{replaced}")


@data_app.command("verify")
def data_verify(
    name: DatasetArg,
    root: RootOpt = None,
    skip_corrupt: Annotated[bool, typer.Option("--skip-corrupt", help="Leave unreadable images out and list them.")] = False,
    option: LoaderOpt = None,
) -> None:
    """Count images per split and class and list missing or corrupt files; exit 1 if any."""
    from wsol.data.verify import format_report, resolve_root, verify_dataset

    options = _loader_options(option)
    if skip_corrupt:
        options["skip_corrupt"] = True
    report = verify_dataset(name, resolve_root(name, root), **options)
    typer.echo(format_report(report))
    if report["problems"]:
        raise typer.Exit(code=1)


@data_app.command("show")
def data_show(
    name: DatasetArg,
    root: RootOpt = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images in the grid.")] = 16,
    out: OutPngOpt = Path("grid.png"),
    split: SplitOpt = "test",
    seed: SeedOpt = 0,
    option: LoaderOpt = None,
) -> None:
    """Draw random images with their GT boxes (red) and masks (white outline) into one PNG."""
    from wsol.data.registry import build_dataset
    from wsol.data.verify import resolve_root, show_grid
    from wsol.jobs.runfolder import fewer_images_note, note

    dataset = build_dataset(name, resolve_root(name, root), split, **_loader_options(option))
    existed = out.exists()
    written = show_grid(dataset, n, out, seed=seed)  # a bad annotation found while drawing is the one line printed
    note(fewer_images_note(split, len(dataset), n))
    typer.echo(f"wrote {written}{_replacing(existed)}")


# --- train commands ---


@app.command("train")
def train_command(
    dataset: DatasetArg,
    method: Annotated[Optional[str], typer.Option("--method", help="natural | pgd | art | art-pgd (default: the config's, else natural).")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture, see `wsol models` (default: the config's).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML config (default: configs/<dataset>_<arch>_<method>.yaml when shipped).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Number of epochs (default: the config's).")] = None,
    batch_size: ConfigBatchSizeOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate, above 0 (default: the config's).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", callback=_check_out_folder, help="Folder to write (default: runs/<dataset>_<arch>_<method>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last epoch, up to its own epoch count unless --epochs (or --set epochs=) says more.")] = False,
    seed: ConfigSeedOpt = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Initial weights, .safetensors or .pt/.pth/.bin: an ImageNet backbone (timm/torchvision layout) or a wsol checkpoint (default: the config's, none in the shipped ones: a CUB model then starts from scratch).")] = None,
    warmup_epochs: Annotated[Optional[int], typer.Option("--warmup-epochs", help="Natural (cross-entropy) epochs, 0 or more, before the method's loss takes over (default: the config's).")] = None,
    warm_start: Annotated[Optional[Path], typer.Option("--warm-start", help="A natural model that stands in for the warm-up: load it and start at epoch warmup_epochs.")] = None,
    root: RootOpt = None,
    option: LoaderOpt = None,
    overrides: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Train a classifier with natural, PGD, ART or ART+PGD training (torchrun for several GPUs)."""
    from wsol.config import parse_overrides, resolve_train_config
    from wsol.jobs.train import default_run_folder, saved_epochs, summary_line, train
    from wsol.utils.distributed import cleanup, launched_rank

    options = {"epochs": epochs, "batch_size": batch_size, "optim.lr": lr, "seed": seed, "weights": weights, "root": root,
               "warmup_epochs": warmup_epochs, "warm_start": warm_start, "dataset_options": _loader_options(option) if option else None}
    changes = parse_overrides(overrides)
    cfg, used = resolve_train_config(dataset, method, config, arch, changes, options)
    folder = out or default_run_folder(cfg)
    kept = saved_epochs(folder) if resume and epochs is None and "epochs" not in changes else None
    if kept is not None:
        cfg = dataclasses.replace(cfg, epochs=kept)  # a resumed run keeps its length unless told otherwise
    main = launched_rank() == 0  # torchrun: only rank 0 prints
    banner = f"config: {used or 'built-in defaults'}; run folder: {folder}"
    if used is None and not (resume and kept is not None):  # said once the checks passed: no note before an error line
        from wsol.config import no_shipped_config_note

        banner = f"{banner}\nnote: {no_shipped_config_note(cfg)}"
    try:
        result = train(cfg, folder, resume=resume, device=device, on_start=lambda: typer.echo(banner, err=True) if main else None)
    finally:
        cleanup()
    if main:
        typer.echo(f"{summary_line(result)}\ncheckpoint: {result['checkpoint']}")


# --- localize commands ---


@app.command("localize")
def localize_command(
    checkpoint: CheckpointOpt,
    dataset: DatasetOpt,
    out: OutPredOpt,
    root: RootOpt = None,
    option: LoaderOpt = None,
    attribution: AttributionOpt = "grad",
    threshold: ThresholdOpt = 0.2,
    sweep: Annotated[bool, typer.Option("--sweep", help="Pick the threshold with the best GT-Known Loc (oracle, as in the papers).")] = False,
    masks: Annotated[bool, typer.Option("--masks", help="Also write COCO RLE segmentations.")] = False,
    target: Annotated[str, typer.Option("--target", help="Map of the predicted class (pred) or of the true class (gt).")] = "pred",
    postprocess: Annotated[str, typer.Option("--postprocess", help="Post-processing preset: wsol, wsolevaluation, art_grad.")] = "wsol",
    split: SplitOpt = "test",
    batch_size: BatchSizeOpt = 32,
    interval: Annotated[float, typer.Option("--interval", help="Step of the threshold grid 0, step, 2·step, ... below 1 that --sweep and the map metrics (MaxBoxAccV2, PxAP) use; between 0 and 1.")] = 0.01,
    device: DeviceOpt = None,
) -> None:
    """Attribution maps → boxes (and masks) for every image, written as COCO results JSON."""
    from wsol.config import LocalizeConfig
    from wsol.data.verify import resolve_root
    from wsol.jobs.evaluate import metric_unit
    from wsol.jobs.localize import run_localize
    from wsol.utils.distributed import is_main_process

    settings = LocalizeConfig(
        attribution=attribution, target=target, postprocess=postprocess, threshold=threshold, sweep=sweep,
        interval=interval, masks=masks, batch_size=batch_size,
    )
    existed = out.exists()
    meta = run_localize(checkpoint, dataset, resolve_root(dataset, root), out, settings, split=split, device=device,
                        dataset_options=_loader_options(option))
    if is_main_process():
        mm = meta["map_metrics"]
        summary = ", ".join(f"{k} {v:.2f} {metric_unit(k)}" for k, v in mm.items() if isinstance(v, float) and not k.endswith("threshold"))
        over = "".join(f", {mm[f'images_with_{kind}']} with a {kind}" for kind in ("box", "mask") if f"images_with_{kind}" in mm)
        replaced = f", {REPLACING}" if existed else ""  # inside the line's one bracket
        typer.echo(f"wrote {out} ({meta['num_images']} images{over}, threshold {meta['threshold']:.2f}{replaced}); {summary}")


@app.command("evaluate")
def evaluate_command(
    pred: Annotated[Path, typer.Option("--pred", callback=_check_pred, help="COCO results JSON written by `wsol localize` (scores go to <pred>.metrics.json).")],
    dataset: DatasetOpt,
    root: RootOpt = None,
    option: LoaderOpt = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Dataset split the predictions were made on: train, test, ... (default: the one recorded in <pred>.meta.json).")] = None,
) -> None:
    """Score predictions: Top-1 Acc, GT-Known / Top-1 Loc, Top-1 Seg, MaxBoxAccV2, PxAP, COCO AP."""
    from wsol.export.tables import Interval, markdown_table
    from wsol.data.verify import resolve_root
    from wsol.jobs.evaluate import evaluate_predictions, metric_unit, metrics_path, over_text, save_metrics

    if _not_rank_0():
        return
    metrics = evaluate_predictions(pred, dataset, resolve_root(dataset, root), split, dataset_options=_loader_options(option) if option else None)
    existed = metrics_path(pred).exists()
    path = save_metrics(pred, metrics)
    intervals = metrics.get("intervals", {})
    ci = "95% CI (Wilson, over those images)"
    rows = [{"metric": k, "value": v, "unit": metric_unit(k), "over (images)": over_text(k, metrics),
             ci: Interval(*intervals[k]) if k in intervals else None}
            for k, v in metrics.items() if v is not None and k not in ("interval", "intervals", "units", "over")]
    typer.echo(markdown_table(rows, ["metric", "value", "unit", "over (images)", ci]))
    typer.echo(f"wrote {path}{_replacing(existed)}")


@app.command("visualize")
def visualize_command(
    checkpoint: CheckpointOpt,
    dataset: DatasetOpt,
    out: OutPngOpt,
    root: RootOpt = None,
    option: LoaderOpt = None,
    attribution: AttributionOpt = "grad",
    threshold: ThresholdOpt = 0.2,
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images in the grid.")] = 16,
    split: SplitOpt = "test",
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
) -> None:
    """Image + heatmap + GT box (red) + predicted box (green), as the ART paper's Fig. 5."""
    from wsol.config import LocalizeConfig
    from wsol.data.verify import resolve_root
    from wsol.jobs.visualize import run_visualize

    if _not_rank_0():
        return
    settings = LocalizeConfig(attribution=attribution, threshold=threshold)
    existed = out.exists()
    path = run_visualize(checkpoint, dataset, resolve_root(dataset, root), out, settings, n, split, seed, device=device,
                         dataset_options=_loader_options(option))
    typer.echo(f"wrote {path}{_replacing(existed)}")


@app.command("demo")
def demo_command(
    out: OutFolderOpt = Path("runs/demo"),
    seed: SeedOpt = 0,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs of the natural model (default: its config's, 12); the ART model is fine-tuned from it for the ART config's one ART epoch on top.")] = None,
    n_train: Annotated[int, typer.Option("--n-train", min=10, help="Training images to generate.")] = 2000,
    n_test: Annotated[int, typer.Option("--n-test", min=10, help="Test images to generate.")] = 500,
    device: DeviceOpt = None,
) -> None:
    """Generate shapes, train natural and ART models, localize, segment, evaluate and write a report (all under --out)."""
    from wsol.jobs.demo import run_demo

    report = run_demo(out, seed=seed, epochs=epochs, n_train=n_train, n_test=n_test, device=device)
    typer.echo(report.read_text())
    typer.echo(f"report: {report}")



# --- robustness commands ---

RobustModelOpt = Annotated[Optional[str], typer.Option("--model", help="Evaluation model name (see `wsol models`), e.g. pyautoattack-resnet18; give it (with --weights) or --checkpoint, not both.")]
RobustWeightsOpt = Annotated[Optional[List[Path]], typer.Option("--weights", help="The model's local weight file (repeat for models with several; none for pyautoattack-resnet18, whose file ships with pyautoattack).")]
RobustCheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="A wsol checkpoint (.safetensors with its .json).")]


def _n_option(default: int) -> Any:
    """``--n`` with its per-command default (the job's DEFAULT_N* constant; tests/test_cli.py checks they agree)."""
    return Annotated[Optional[int], typer.Option(
        "--n", min=1, help=f"Test samples, drawn reproducibly from --seed (default: {default}, or the whole split when it is smaller).")]


NOpt = _n_option(500)
NAttributionOpt = _n_option(1000)
NTargetedOpt = _n_option(100)
EpsOpt = Annotated[str, typer.Option("--eps", help="ℓ∞ attack radius in pixel units of [0, 1] images: 8/255 or a decimal such as 0.031; a bare 8 or 1 is refused as a forgotten /255.")]
def _lowercase(value: str) -> str:
    return value.lower()


NormOpt = Annotated[str, typer.Option("--norm", callback=_lowercase, help="Threat model: linf or l2 (any case: Linf, L2).")]
Bf16Opt = Annotated[bool, typer.Option("--bf16", help="Also run under CUDA bf16 autocast, reported beside fp32 (CUDA only).")]
NIterOpt = Annotated[Optional[int], typer.Option("--n-iter", min=1, help="Iterations of APGD and FAB: apgd-ce, apgd-dlr, apgd-t, fab, fab-t (default: AutoAttack's 100). It leaves square alone: Square's budget is --n-queries.")]
NQueriesOpt = Annotated[Optional[int], typer.Option("--n-queries", min=1, help="Square's budget, its query count (default: AutoAttack's 5,000); only square uses it, --n-iter does not change it.")]
NRestartsOpt = Annotated[Optional[int], typer.Option("--n-restarts", min=1, help="Restarts of apgd-ce, apgd-dlr, apgd-t, fab, square (default: AutoAttack's: 1 in the standard ladder, also given as its four attacks in order; "
                                                                          "5 for APGD-CE, APGD-DLR and FAB in plus, study, a comma list or a single --attack; APGD-T and Square 1); "
                                                                          "fab-t runs one whatever this says, as AutoAttack runs it.")]
RobustEpsOpt = Annotated[Optional[str], typer.Option("--eps", help="Attack radius in pixel units of [0, 1] images (default: 8/255 in linf, 0.5 in l2): 8/255 or a decimal such as 0.031; in linf a bare 8 or 1 is refused as a forgotten /255; an l2 radius is any number ≥ 0.")]
EpsSweepOpt = Annotated[Optional[str], typer.Option("--eps-sweep", help="Sweep grid. linf: x of ε = x/255, a range 0:8 (the default), which includes both ends (0,1,…,8); a range with a step 0:8:2 (0,2,4,6,8), which stops at the last value the step reaches, so 0:7:2 is 0,2,4,6 without 7; or a list 0,1,2,4,8. l2: a comma list of radii in pixel units of [0, 1] images (default: 0,0.25,0.5,1).")]
SweepAttackOpt = Annotated[str, typer.Option("--attack", help="Attack run at each ε of the sweep: apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square, or a comma list.")]
LadderOpt = Annotated[str, typer.Option("--ladder", help="AutoAttack ladder: standard, study, plus or a comma list of attacks.")]


def _robust_settings(checkpoint: Optional[Path], model: Optional[str], weights: Optional[List[Path]], dataset: str, **kw):
    from wsol.jobs.robustness import DEFAULT_EPS, RobustnessSettings, parse_eps

    if (checkpoint is None) == (model is None):
        raise WsolError("name the model with either --checkpoint CK or --model NAME (with --weights FILE)")
    if checkpoint is not None and weights:
        raise WsolError("--weights goes with --model NAME; a --checkpoint carries its own weights, drop --weights")
    name, files = ("wsol-checkpoint", [checkpoint]) if checkpoint is not None else (model, list(weights or []))
    if not isinstance(kw["eps"], float):
        kw["eps"] = parse_eps(DEFAULT_EPS.get(kw["norm"], "8/255") if kw["eps"] is None else kw["eps"], norm=kw["norm"])
    return RobustnessSettings(model=str(name), weights=[str(f) for f in files], dataset=dataset, **kw).validate()


def _robust_run(settings, dataset: str, root: Optional[Path], out: Path, device: Optional[str], notes: Sequence[Optional[str]] = ()) -> None:
    from wsol.data.verify import resolve_root
    from wsol.jobs.robustness import evaluate_robustness
    from wsol.utils.distributed import is_main_process

    evaluate_robustness(settings, resolve_root(dataset, root), out, device, notes=notes)
    if is_main_process():
        typer.echo((out / "report.md").read_text())
        typer.echo(f"report: {out / 'report.md'}")


FirstOpt = Annotated[bool, typer.Option("--first", help="Take the split's first n samples in its order, as RobustBench's load_cifar10 does "
                                                       "(to compare with its numbers), instead of n drawn from --seed; --seed then seeds the attacks alone.")]


@robustness_app.command("evaluate")
def robustness_evaluate(
    dataset: DatasetOpt,
    out: OutFolderOpt,
    checkpoint: RobustCheckpointOpt = None,
    model: RobustModelOpt = None,
    weights: RobustWeightsOpt = None,
    root: RootOpt = None,
    option: LoaderOpt = None,
    attacks: Annotated[Optional[str], typer.Option("--attacks", help="Comma list of attacks, e.g. apgd-ce,apgd-dlr,fab (overrides --ladder).")] = None,
    ladder: LadderOpt = "standard",
    pgd: Annotated[int, typer.Option("--pgd", min=0, help="Also run PGD-k (e.g. 40) at --eps, step size 2.5·ε/k (Madry et al.) from a random start; 0: none.")] = 0,
    pgd_restarts: Annotated[int, typer.Option("--pgd-restarts", min=1, help="PGD random restarts.")] = 1,
    pgd_loss: Annotated[str, typer.Option("--pgd-loss", callback=_lowercase, help="PGD's loss: ce (cross-entropy) or cw (the margin loss); any case, as --norm.")] = "ce",
    eps: RobustEpsOpt = None,
    norm: NormOpt = "linf",
    n: NOpt = None,
    seed: SeedOpt = 0,
    first: FirstOpt = False,
    batch_size: RobustBatchSizeOpt = 250,
    n_iter: NIterOpt = None,
    n_queries: NQueriesOpt = None,
    n_restarts: NRestartsOpt = None,
    bf16: Bf16Opt = False,
    device: DeviceOpt = None,
) -> None:
    """AutoAttack ladder (accuracy, delta, minutes per attack), optionally PGD-k, on n test samples."""
    settings = _robust_settings(checkpoint, model, weights, dataset, n=n, seed=seed, first=first, eps=eps, norm=norm,
                                ladder=list(_ladder(ladder if attacks is None else attacks)),
                                pgd_steps=pgd, pgd_restarts=pgd_restarts, pgd_loss=pgd_loss, batch_size=batch_size, n_iter=n_iter, n_queries=n_queries, n_restarts=n_restarts, bf16=bf16,
                                dataset_options=_loader_options(option))
    _robust_run(settings, dataset, root, out, device)


def _ladder(name: str):
    from wsol.attacks.autoattack import resolve_ladder

    return resolve_ladder(name)


@robustness_app.command("per-class")
def robustness_per_class(
    dataset: DatasetOpt,
    out: OutFolderOpt,
    checkpoint: RobustCheckpointOpt = None,
    model: RobustModelOpt = None,
    weights: RobustWeightsOpt = None,
    root: RootOpt = None,
    option: LoaderOpt = None,
    eps_sweep: EpsSweepOpt = None,
    attack: SweepAttackOpt = "apgd-ce",
    norm: NormOpt = "linf",
    n: NOpt = None,
    seed: SeedOpt = 0,
    first: FirstOpt = False,
    batch_size: RobustBatchSizeOpt = 250,
    n_iter: NIterOpt = None,
    n_queries: NQueriesOpt = None,
    n_restarts: NRestartsOpt = None,
    bf16: Bf16Opt = False,
    device: DeviceOpt = None,
) -> None:
    """Per-class robust accuracy over an ε sweep (x/255 in linf, radii in l2; monotone), drops per step, confusion under attack."""
    from wsol.jobs.robustness import parse_eps_sweep, sweep_radii, sweep_step_note

    grid = parse_eps_sweep(eps_sweep, norm)
    settings = _robust_settings(checkpoint, model, weights, dataset, n=n, seed=seed, first=first, eps=sweep_radii(grid, norm)[-1], norm=norm, sweep=grid,
                                sweep_attack=attack, batch_size=batch_size, n_iter=n_iter, n_queries=n_queries, n_restarts=n_restarts, bf16=bf16,
                                dataset_options=_loader_options(option))
    _robust_run(settings, dataset, root, out, device, notes=[sweep_step_note(eps_sweep, norm)])


@robustness_app.command("study")
def robustness_study(
    models: Annotated[Path, typer.Argument(help="YAML file holding 'models:', a list of {name, model, weights} (a name of `wsol models` and its file or files) "
                                                "or {name, checkpoint} (a wsol checkpoint), and no other key; paths relative to the file.")],
    dataset: DatasetOpt,
    out: OutFolderOpt,
    root: RootOpt = None,
    option: LoaderOpt = None,
    ladder: LadderOpt = "study",
    eps: RobustEpsOpt = None,
    eps_sweep: EpsSweepOpt = None,
    attack: SweepAttackOpt = "apgd-ce",
    norm: NormOpt = "linf",
    n: NOpt = None,
    seed: SeedOpt = 0,
    first: FirstOpt = False,
    batch_size: RobustBatchSizeOpt = 250,
    n_iter: NIterOpt = None,
    n_queries: NQueriesOpt = None,
    n_restarts: NRestartsOpt = None,
    bf16: Bf16Opt = False,
    device: DeviceOpt = None,
) -> None:
    """The per-class study: ladder and sweep for every model, one report (a model already done is skipped)."""
    from wsol.data.verify import resolve_root
    from wsol.jobs.robustness import DEFAULT_EPS, RobustnessSettings, parse_eps, parse_eps_sweep, run_study, sweep_step_note
    from wsol.utils.distributed import is_main_process

    sweep = parse_eps_sweep(eps_sweep, norm)
    template = RobustnessSettings(model="", weights=[], dataset=dataset, n=n, seed=seed, first=first, eps=parse_eps(DEFAULT_EPS[norm] if eps is None else eps, norm=norm),
                                  norm=norm, ladder=list(_ladder(ladder)), sweep=sweep, sweep_attack=attack,
                                  batch_size=batch_size, n_iter=n_iter, n_queries=n_queries, n_restarts=n_restarts, bf16=bf16,
                                  dataset_options=_loader_options(option)).validate()
    report = run_study(models, template, resolve_root(dataset, root), out, device, notes=[sweep_step_note(eps_sweep, norm)])
    if is_main_process():
        typer.echo(report.read_text())
        typer.echo(f"report: {report}")


# --- attack commands ---

AttackKOpt = Annotated[int, typer.Option("--k", help="Top-k pixels of the map (fewer than H×W, the model input's pixels).")]
BetaOpt = Annotated[Optional[float], typer.Option("--beta", help="softplus β of the attack's gradient surrogate, above 0 (the measured maps use the ReLU model).")]
IgStepsOpt = Annotated[int, typer.Option("--ig-steps", min=1, help="Integrated-gradients intervals.")]
NMapsOpt = Annotated[int, typer.Option("--n-maps", min=0, help="Samples (the first drawn) whose images and maps go to maps.npz for `wsol report figures`.")]
TargetedNMapsOpt = Annotated[int, typer.Option("--n-maps", min=0, help="Samples (the first drawn) whose image, attacked image and attacked map go to "
                                                                      "maps.npz (for your own plots: `wsol report figures` reads attribution runs only).")]


def _attack_echo(summary: dict, out: Path) -> None:
    from wsol.utils.distributed import cleanup, is_main_process

    from wsol.jobs.attack import summary_line

    main = is_main_process()
    cleanup()
    if main:
        typer.echo(summary_line(summary, out))


@attack_app.command("attribution")
def attack_attribution_command(
    checkpoint: CheckpointOpt,
    dataset: DatasetOpt,
    out: OutFolderOpt,
    root: RootOpt = None,
    option: LoaderOpt = None,
    attribution: AttributionOpt = "ig",
    objective: Annotated[str, typer.Option("--objective", help="IFIA objective: topk, mass-center, random.")] = "topk",
    k: AttackKOpt = 100,
    eps: EpsOpt = "8/255",
    step_size: Annotated[str, typer.Option("--step-size", help="Sign-step size in pixel units of [0, 1] images (1/255 or a decimal), above 0.")] = "1/255",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Attack iterations.")] = 50,
    beta: BetaOpt = 50.0,
    ig_steps: IgStepsOpt = 100,
    preset: Annotated[str, typer.Option("--preset", help="consistent (one map for attack and metric) or official (the ART CIFAR evaluation, --attribution ig only).")] = "consistent",
    n: NAttributionOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 32,
    split: SplitOpt = "test",
    pgd_steps: Annotated[int, typer.Option("--pgd-steps", help="PGD steps for the robust-accuracy column (0 skips it; 0 or more).")] = 40,
    pgd_eps: Annotated[str, typer.Option("--pgd-eps", help="PGD ℓ∞ radius in pixel units of [0, 1] images (8/255 or a decimal).")] = "8/255",
    pgd_step_size: Annotated[str, typer.Option("--pgd-step-size", help="PGD step size in pixel units of [0, 1] images (2/255 or a decimal), above 0.")] = "2/255",
    n_maps: NMapsOpt = 8,
    device: DeviceOpt = None,
) -> None:
    """IFIA on n test samples: samples.csv as it goes (resumable), maps.npz, summary.json with 95% intervals."""
    from wsol.data.verify import resolve_root
    from wsol.jobs.attack import AttributionAttackSettings, run_attribution_attack

    settings = AttributionAttackSettings(
        attribution=attribution, objective=objective, k=k, eps=eps, step_size=step_size, steps=steps, beta=beta, ig_steps=ig_steps,
        preset=preset, n=n, seed=seed, batch_size=batch_size, split=split, pgd_steps=pgd_steps, pgd_eps=pgd_eps, pgd_step_size=pgd_step_size,
        n_maps=n_maps,
    )
    settings.check()
    _attack_echo(run_attribution_attack(checkpoint, dataset, resolve_root(dataset, root), out, settings, device=device, dataset_options=_loader_options(option)), out)


@attack_app.command("targeted")
def attack_targeted_command(
    checkpoint: CheckpointOpt,
    dataset: DatasetOpt,
    out: OutFolderOpt,
    root: RootOpt = None,
    option: LoaderOpt = None,
    attribution: AttributionOpt = "grad",
    eps: EpsOpt = "8/255",
    lr: Annotated[str, typer.Option("--lr", help="Adam learning rate on the perturbation (pixel units).")] = "1/255",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Attack iterations.")] = 100,
    gamma: Annotated[float, typer.Option("--gamma", help="Weight of the output-keeping term, 0 or more.")] = 1e3,
    beta: Annotated[Optional[float], typer.Option("--beta", help="Constant softplus β of the attack's gradient surrogate, 50 when not given (the measured maps use the ReLU model); not with --beta-growth.")] = None,
    beta_growth: Annotated[Optional[str], typer.Option("--beta-growth", help="B0:B1: a β rising geometrically from B0 to B1 over the iterations instead of a constant --beta (Dombrowski et al. use 10:100).")] = None,
    k: AttackKOpt = 100,
    ig_steps: IgStepsOpt = 30,
    target_index: Annotated[Optional[int], typer.Option("--target-index", help="Index in the split of the one image every map is driven to (default: each sample gets another of the n samples, a seeded cycle).")] = None,
    n: NTargetedOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 32,
    split: SplitOpt = "test",
    n_maps: TargetedNMapsOpt = 8,
    device: DeviceOpt = None,
) -> None:
    """Targeted map manipulation on n test samples: samples.csv (similarity to target and original), summary.json."""
    from wsol.data.verify import resolve_root
    from wsol.jobs.attack import TargetedAttackSettings, run_targeted_attack

    settings = TargetedAttackSettings(
        attribution=attribution, eps=eps, lr=lr, steps=steps, gamma=gamma, beta=beta, beta_growth=beta_growth, k=k, ig_steps=ig_steps, target_index=target_index,
        n=n, seed=seed, batch_size=batch_size, split=split, n_maps=n_maps,
    )
    settings.check()
    _attack_echo(run_targeted_attack(checkpoint, dataset, resolve_root(dataset, root), out, settings, device=device, dataset_options=_loader_options(option)), out)


# --- report commands ---

RunDirsArg = Annotated[List[Path], typer.Argument(help="Run folders written by `wsol attack attribution`.")]


@report_app.command("table1")
def report_table1_command(
    runs: RunDirsArg,
    out: Annotated[Optional[Path], typer.Option("--out", callback=_check_table1_out,
                                                help="File to write: CSV for .csv, Markdown for .md (replaced if it exists).")] = None,
    paired: Annotated[bool, typer.Option("--paired", help="Also print each run's IN and K minus the first run's, sample by sample on the "
                                                          "samples both scored, with a paired 95% t-interval (and put it in a .md --out).")] = False,
) -> None:
    """The ART paper's Table 1 (method, IN, K, natural and PGD accuracy) as Markdown on stdout and, with --out, in a file:
    CSV (table1.csv) or Markdown (table1.md) as its extension says; another extension is refused."""
    from wsol.report.attack import table1

    replaced = out is not None and out.exists()
    text, notes = table1(runs, out, paired=paired)
    typer.echo(text, nl=False)
    if out is not None:
        typer.echo(f"wrote {out}{_replacing(replaced)}", err=True)
    for note in notes:
        typer.echo(f"note: {note}", err=True)


@report_app.command("figures")
def report_figures_command(runs: RunDirsArg, out: OutFolderOpt) -> None:
    """Box plots of IN and K per run (Fig. 11), the ε sweep (Fig. 12), cos(x, g) (Fig. 6), original vs attacked maps."""
    from wsol.report.attack import attack_figures

    before = set(Path(out).glob("*.png"))
    written, notes = attack_figures(runs, out)
    for path in written:
        typer.echo(f"wrote {path}{_replacing(path in before)}")
    for note in notes:
        typer.echo(f"note: {note}", err=True)



def _click_classes(name: str) -> Tuple[type, ...]:
    """The exception class ``name`` from every click the CLI may meet: the copy typer ≥ 0.23 bundles as
    ``typer._click`` (its classes do not derive from plain click's) and plain click, where each is installed."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _one_line(text: str) -> str:
    """Collapse a message onto one line (click wraps long messages and adds blank lines)."""
    return " ".join(str(text).split())


RANK_0_GRACE_S = 10.0
"""How long another rank waits, under torchrun, for rank 0 to print a mistake both met before their work started."""


def _error(message: str, *, per_rank: bool = True) -> None:
    """Print ``error: message`` once per job. Under torchrun every rank makes the same checks on the same
    arguments and files before its work starts, so a mistake found then is rank 0's to print: another rank
    first waits ``RANK_0_GRACE_S`` (torchrun ends it as soon as rank 0 has printed and exited) and prints it,
    naming itself, only if it is still running then, so the line is never lost. An error met once the work has
    started may be one rank's own: that rank prints it at once, naming itself. ``per_rank=False``: rank 0 alone."""
    from wsol.utils.launch import launched_rank, work_started

    rank = launched_rank()
    if rank != 0:
        if not per_rank:
            return
        if not work_started():
            if not os.environ.get("TORCHELASTIC_RUN_ID"):
                return  # not torchrun's: nothing ends this process for rank 0, which prints the same line
            time.sleep(RANK_0_GRACE_S)
        typer.echo(f"error: rank {rank}: {message}", err=True)
        return
    typer.echo(f"error: {message}", err=True)


INTERRUPTED_STATUS = 130
INTERRUPTED = ("interrupted; every file written so far is complete: run the same command again to continue "
               "(localize, attacks, robustness runs and the demo resume; wsol train needs --resume)")


def _refuse_empty_arguments(argv: Sequence[str]) -> None:
    """Refuse an empty argument (``--out ""``, ``--out=``, an unset shell variable): no wsol option or argument takes
    one, and a path option would read it as the current folder and write a whole run there."""
    for i, arg in enumerate(argv):
        if arg.startswith("--") and arg.endswith("="):
            name = arg[:-1]
        elif arg == "":
            name = argv[i - 1] if i > 0 and argv[i - 1].startswith("-") else "an argument"
        else:
            continue
        raise WsolError(f"{name} is empty (an unset shell variable?); give it a value")


def _expand_home_after_equals(argv: Sequence[str]) -> List[str]:
    """``--out=~/runs/x`` as ``--out ~/runs/x`` reads: the shell expands a ``~`` only at the start of a word, so the
    first form reached wsol as a folder named ``~`` in the working folder (created by an ``--out``)."""
    expanded = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        home = arg.startswith("--") and sep and (value == "~" or value.startswith("~/"))
        expanded.append(f"{name}={os.path.expanduser(value)}" if home else arg)
    return expanded


def run(argv: Optional[List[str]] = None) -> int:
    """Run the CLI on ``argv`` and return the exit status.

    A user mistake (a parse error of any kind, a WsolError or a PermissionError) prints exactly one ``error: ...`` line on
    stderr and returns 2; a bare command prints its help; anything else is a bug and raises.
    """
    no_args_help = _click_classes("NoArgsIsHelpError")
    usage_errors = _click_classes("ClickException")
    exits = (typer.Exit,) + _click_classes("Exit")
    aborts = (typer.Abort,) + _click_classes("Abort")
    from wsol.utils.launch import mark_work_started

    mark_work_started(False)
    try:
        argv = _expand_home_after_equals(sys.argv[1:] if argv is None else argv)
        _refuse_empty_arguments(argv)
        result = app(args=argv, standalone_mode=False, prog_name="wsol")
    except WsolError as err:
        _error(_one_line(err))
        return 2
    except PermissionError as err:  # a file or folder the user cannot read or write: theirs to fix, not a bug
        path = err.filename or _one_line(err)
        _error(f"permission denied: {path}; change its permissions or choose another path")
        return 2
    except no_args_help as ex:
        typer.echo(ex.format_message())
        return 0
    except usage_errors as ex:
        ctx = getattr(ex, "ctx", None)
        hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        _error(f"{_one_line(ex.format_message()).rstrip('.')}{hint}")
        return 2
    except exits as ex:
        return ex.exit_code
    except aborts:
        _error("aborted", per_rank=False)
        return 1
    if result == INTERRUPTED_STATUS:  # typer turns Ctrl-C into this status, silently; no command returns it
        _error(INTERRUPTED, per_rank=False)
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    """Console-script entry point. A Ctrl-C that lands outside a command (while its result is printed, say) ends
    like one inside it: one line and status 130, never a traceback."""
    try:
        status = run()
    except KeyboardInterrupt:
        _error(INTERRUPTED, per_rank=False)
        status = INTERRUPTED_STATUS
    sys.exit(status)
