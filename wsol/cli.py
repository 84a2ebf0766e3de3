"""The `wsol` command line: parse options, build a config, call one job (wsol.jobs). No logic here."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

import wsol
from wsol.errors import WsolError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Attributional robustness and weakly supervised localization.")
data_app = typer.Typer(no_args_is_help=True, help="Generate, check and look at datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")


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
    """List the architectures `--arch` accepts."""
    from wsol.models.build import MODELS, arch_spec

    for name in MODELS.names():
        spec = arch_spec(name)
        typer.echo(f"{name:<16} input {spec.input_size:>3}px  {spec.description}")


@config_app.command("show")
def config_show(
    file: Annotated[Optional[Path], typer.Argument(help="YAML config; omit for the defaults.")] = None,
    overrides: Annotated[Optional[List[str]], typer.Option("--set", help="Override a key, e.g. --set art.lam=0.3")] = None,
) -> None:
    """Print the resolved, validated configuration."""
    from wsol.config import config_to_yaml, load_config, parse_overrides

    typer.echo(config_to_yaml(load_config(file, parse_overrides(overrides))), nl=False)


# --- data commands ---


@data_app.command("synth")
def data_synth(
    kind: Annotated[str, typer.Argument(help="Synthetic set to generate: shapes.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: $XDG_CACHE_HOME/wsol/shapes).")] = None,
    n_train: Annotated[int, typer.Option("--n-train", help="Training images.")] = 2000,
    n_test: Annotated[int, typer.Option("--n-test", help="Test images.")] = 500,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 64,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Number of classes (2-40).")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same bytes.")] = 0,
) -> None:
    """Generate a synthetic WSOL set in CUB-200-2011's on-disk format."""
    from wsol.data.shapes import default_shapes_root, synthesize_shapes
    from wsol.errors import UnknownNameError

    if kind != "shapes":
        raise UnknownNameError(f"unknown synthetic dataset {kind!r}; choose one of: shapes")
    root = synthesize_shapes(out or default_shapes_root(), n_train=n_train, n_test=n_test, size=size, num_classes=num_classes, seed=seed)
    typer.echo(f"wrote {n_train} train + {n_test} test images ({size}x{size}, {num_classes} classes) to {root}")


@data_app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="Dataset name (cub, shapes, wsolmeta, coco, ...).")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Dataset folder (shapes: defaults to the cache).")] = None,
    skip_corrupt: Annotated[bool, typer.Option("--skip-corrupt", help="Leave unreadable images out and list them.")] = False,
    option: Annotated[Optional[List[str]], typer.Option("--option", "-o", help="Loader option KEY=VALUE, e.g. -o metadata=DIR.")] = None,
) -> None:
    """Count images per split and class and list missing or corrupt files; exit 1 if any."""
    from wsol.data.verify import format_report, parse_loader_options, resolve_root, verify_dataset

    options = parse_loader_options(option or [])
    if skip_corrupt:
        options["skip_corrupt"] = True
    report = verify_dataset(name, resolve_root(name, root), **options)
    typer.echo(format_report(report))
    if report["problems"]:
        raise typer.Exit(code=1)


@data_app.command("show")
def data_show(
    name: Annotated[str, typer.Argument(help="Dataset name (cub, shapes, wsolmeta, coco, ...).")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Dataset folder (shapes: defaults to the cache).")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of images in the grid.")] = 16,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("grid.png"),
    split: Annotated[str, typer.Option("--split", help="Split to draw from.")] = "test",
    seed: Annotated[int, typer.Option("--seed", help="Seed for picking the images.")] = 0,
    option: Annotated[Optional[List[str]], typer.Option("--option", "-o", help="Loader option KEY=VALUE.")] = None,
) -> None:
    """Draw random images with their GT boxes (red) and masks (green) into one PNG."""
    from wsol.data.registry import build_dataset
    from wsol.data.verify import parse_loader_options, resolve_root, show_grid

    dataset = build_dataset(name, resolve_root(name, root), split, **parse_loader_options(option or []))
    typer.echo(f"wrote {show_grid(dataset, n, out, seed=seed)}")


# --- train commands ---


@app.command("train")
def train_command(
    dataset: Annotated[str, typer.Argument(help="Dataset: shapes, cifar10, svhn, gtsrb, flowers17, cub.")],
    method: Annotated[Optional[str], typer.Option("--method", help="natural | pgd | art | art-pgd (default: the config's, else natural).")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture (see `wsol models`).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML config (default: configs/<dataset>_<arch>_<method>.yaml when shipped).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Number of epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Global batch size (split across processes).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: runs/<dataset>_<arch>_<method>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last epoch.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed.")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Initial weights (ImageNet backbone or wsol checkpoint).")] = None,
    warmup_epochs: Annotated[Optional[int], typer.Option("--warmup-epochs", help="Natural (cross-entropy) epochs before the method's loss takes over.")] = None,
    warm_start: Annotated[Optional[Path], typer.Option("--warm-start", help="A natural model that stands in for the warm-up: load it and start at epoch warmup_epochs.")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", help="Dataset folder (shapes: defaults to the generated cache).")] = None,
    overrides: Annotated[Optional[List[str]], typer.Option("--set", help="Override a config key, e.g. --set art.lam=0.3 (repeatable).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda when available).")] = None,
) -> None:
    """Train a classifier with natural, PGD, ART or ART+PGD training (torchrun for several GPUs)."""
    import os

    from wsol.config import parse_overrides, resolve_train_config
    from wsol.jobs.train import default_run_folder, train
    from wsol.utils.distributed import cleanup

    options = {"epochs": epochs, "batch_size": batch_size, "optim.lr": lr, "seed": seed, "weights": weights, "root": root,
               "warmup_epochs": warmup_epochs, "warm_start": warm_start}
    cfg, used = resolve_train_config(dataset, method, config, arch, parse_overrides(overrides), options)
    folder = out or default_run_folder(cfg)
    main = os.environ.get("RANK", "0") == "0"  # torchrun: only rank 0 prints
    if main:
        typer.echo(f"config: {used or 'built-in defaults'}; run folder: {folder}", err=True)
    try:
        result = train(cfg, folder, resume=resume, device=device)
    finally:
        cleanup()
    if main:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items() if k not in ("out", "checkpoint"))
        typer.echo(f"{shown}\ncheckpoint: {result['checkpoint']}")


# --- localize commands ---


@app.command("localize")
def localize_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A wsol checkpoint (.safetensors with its .json).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name, e.g. cub or shapes.")],
    out: Annotated[Path, typer.Option("--out", help="COCO results JSON to write (a .meta.json goes beside it).")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Dataset root (shapes: the generated tree).")] = None,
    attribution: Annotated[str, typer.Option("--attribution", help="grad, ig, gradshap, smoothgrad, cam, gradcam, gradcampp.")] = "grad",
    threshold: Annotated[float, typer.Option("--threshold", help="Box/mask threshold as a fraction of each map's max.")] = 0.2,
    sweep: Annotated[bool, typer.Option("--sweep", help="Pick the threshold with the best GT-Known Loc (oracle, as in the papers).")] = False,
    masks: Annotated[bool, typer.Option("--masks", help="Also write COCO RLE segmentations.")] = False,
    target: Annotated[str, typer.Option("--target", help="Map of the predicted class (pred) or of the true class (gt).")] = "pred",
    postprocess: Annotated[str, typer.Option("--postprocess", help="Post-processing preset: wsol, wsolevaluation, art_grad.")] = "wsol",
    split: Annotated[str, typer.Option("--split")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    interval: Annotated[float, typer.Option("--interval", help="Threshold sweep step.")] = 0.01,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or auto.")] = None,
) -> None:
    """Attribution maps → boxes (and masks) for every image, written as COCO results JSON."""
    from wsol.config import LocalizeConfig
    from wsol.data.verify import resolve_root
    from wsol.jobs.localize import run_localize
    from wsol.utils.distributed import is_main_process

    settings = LocalizeConfig(
        attribution=attribution, target=target, postprocess=postprocess, threshold=threshold, sweep=sweep,
        interval=interval, masks=masks, batch_size=batch_size,
    )
    meta = run_localize(checkpoint, dataset, resolve_root(dataset, root), out, settings, split=split, device=device)
    if is_main_process():
        mm = meta["map_metrics"]
        summary = ", ".join(f"{k} {v:.2f}" for k, v in mm.items() if isinstance(v, float) and not k.endswith("threshold"))
        typer.echo(f"wrote {out} ({meta['num_images']} images, threshold {meta['threshold']:.2f}); {summary}")


@app.command("evaluate")
def evaluate_command(
    pred: Annotated[Path, typer.Option("--pred", help="COCO results JSON written by `wsol localize`.")],
    dataset: Annotated[str, typer.Option("--dataset")],
    root: Annotated[Optional[Path], typer.Option("--root")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Defaults to the split the predictions were made on.")] = None,
) -> None:
    """Score predictions: Top-1 Acc, GT-Known / Top-1 Loc, Top-1 Seg, MaxBoxAccV2, PxAP, COCO AP."""
    from wsol.export.tables import markdown_table
    from wsol.data.verify import resolve_root
    from wsol.jobs.evaluate import evaluate_predictions, save_metrics

    metrics = evaluate_predictions(pred, dataset, resolve_root(dataset, root), split)
    path = save_metrics(pred, metrics)
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if v is not None]
    typer.echo(markdown_table(rows, ["metric", "value"]))
    typer.echo(f"saved {path}")


@app.command("visualize")
def visualize_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint")],
    dataset: Annotated[str, typer.Option("--dataset")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    root: Annotated[Optional[Path], typer.Option("--root")] = None,
    attribution: Annotated[str, typer.Option("--attribution")] = "grad",
    threshold: Annotated[float, typer.Option("--threshold")] = 0.2,
    n: Annotated[int, typer.Option("--n", min=1, help="How many images.")] = 16,
    split: Annotated[str, typer.Option("--split")] = "test",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
) -> None:
    """Image + heatmap + GT box (red) + predicted box (green), as the ART paper's Fig. 5."""
    from wsol.config import LocalizeConfig
    from wsol.data.verify import resolve_root
    from wsol.jobs.visualize import run_visualize

    settings = LocalizeConfig(attribution=attribution, threshold=threshold)
    path = run_visualize(checkpoint, dataset, resolve_root(dataset, root), out, settings, n, split, seed, device=device)
    typer.echo(f"wrote {path}")


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for data, models, predictions, figures and report.md.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Override the training epochs.")] = None,
    n_train: Annotated[int, typer.Option("--n-train", min=10)] = 2000,
    n_test: Annotated[int, typer.Option("--n-test", min=10)] = 500,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
) -> None:
    """Generate shapes, train natural and ART models, localize, segment, evaluate and write a report."""
    from wsol.jobs.demo import run_demo

    report = run_demo(out, seed=seed, epochs=epochs, n_train=n_train, n_test=n_test, device=device)
    typer.echo(report.read_text())
    typer.echo(f"report: {report}")



def run(argv: Optional[List[str]] = None) -> int:
    """Run the CLI on ``argv`` and return the exit status; user errors print one line, status 2."""
    import click

    try:
        result = app(args=argv, standalone_mode=False, prog_name="wsol")
    except WsolError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except click.exceptions.Exit as ex:
        return ex.exit_code
    except click.ClickException as ex:
        ex.show()
        return ex.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(run())
