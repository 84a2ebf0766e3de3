"""The training job shared by every method: build the run, train epochs, evaluate, checkpoint.

One run writes into one folder: ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per epoch),
``train_state.pt`` (everything needed to resume: weights, optimizer, scheduler, epoch, RNG) and
``model.safetensors`` + ``model.json`` (the model for every other wsol command, with the input
size and evaluation transform the run used). After every epoch the model is written first and
``train_state.pt`` last, each atomically: the state is the commit point, so a kill anywhere leaves
a state whose model is on disk, and ``--resume`` redoes at most the epoch the kill interrupted.
The run folder is locked for the whole job, and nothing is written before the config, the
datasets and the headers of the test images have been checked.

Reproducibility: the data order is a function of (seed, epoch) (DistributedSampler.set_epoch), the
global RNGs are reseeded from (seed, epoch) at the start of every epoch, and the random starts of
the attacks are drawn per step from a generator seeded by (seed, epoch, step) for the whole global
batch, each rank taking its own rows. Hence a resumed run continues bit-for-bit (on CPU), and a
DDP run sees the same batches and starts as a single process with the same global batch.

Launched by ``torchrun`` (WORLD_SIZE > 1) the same call trains with DistributedDataParallel:
``config.batch_size`` is the global batch (split evenly across ranks), only rank 0 writes.
"""
from __future__ import annotations

import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from wsol.attacks import pgd_attack, random_delta
from wsol.config import ScheduleConfig, TrainConfig, config_to_dict, config_to_yaml, start_eps
from wsol.data.base import require_images
from wsol.errors import ConfigError, DataError, WsolError
from wsol.jobs.runfolder import METRICS_FILE, MODEL_FILE, STATE_FILE, config_differences, differences_text, keep_records_until, lock_run_folder, refuse_other_run, shard
from wsol.models import build_model, save_model
from wsol.models.build import arch_spec
from wsol.models.checkpoint import load_train_state, save_train_state
from wsol.train.methods import get_method, natural_step
from wsol.utils import distributed as dist_utils
from wsol.utils.device import select_device
from wsol.utils.io import append_jsonl, atomic_write_text
from wsol.utils.numbers import counted
from wsol.utils.progress import progress
from wsol.utils.seeding import rng_state, seed_everything, set_rng_state

CONFIG_FILE = "config.yaml"
# config keys that may change between a run and its resumption (they do not change the weights)
_RESUMABLE = ("epochs", "root", "weights", "warm_start", "workers", "eval_batch_size", "eval.")


class NonFiniteLossError(WsolError):
    """The training loss became NaN or infinite; the run stopped before saving anything of it."""


# ----------------------------------------------------------------------------- the job


def train(
    config: TrainConfig,
    out: Union[str, Path],
    resume: bool = False,
    device: Union[str, torch.device, None] = None,
    *,
    train_set: Optional[Dataset] = None,
    test_set: Optional[Dataset] = None,
    on_start: Optional[Callable[[], None]] = None,
) -> Dict[str, Any]:
    """Train ``config.method`` on ``config.dataset`` into folder ``out``; returns the last epoch's metrics.

    ``on_start`` is called once everything is checked, before the first file is written (the CLI
    prints its banner there). ``resume=True`` continues from ``out/train_state.pt`` when it exists
    (and says so on stderr and starts fresh when it does not); the config may differ from the saved one only in ``epochs``, ``root``, ``weights``,
    ``workers`` and the evaluation settings. ``train_set`` / ``test_set`` replace the datasets
    built from the config (any Dataset of Samples).

    Under torchrun the process group is created on the first call and left open, so one process
    can train several models (re-creating a group on the same rendezvous store can hang); call
    :func:`wsol.utils.distributed.cleanup` when done.
    """
    dist_utils.init_from_env()
    out = Path(out)
    refuse_other_run(out, "training")
    with lock_run_folder(out):
        run = build_run(config, out, resume, device, train_set, test_set)
        dist_utils.mark_work_started()
        if on_start is not None:
            on_start()
        if resume and not run.resumed and dist_utils.is_main_process():
            print(f"note: {out} holds no earlier run to resume; starting fresh", file=sys.stderr)
        if run.resumed and run.start_epoch >= config.epochs and dist_utils.is_main_process():
            print(f"note: {out} has done its {counted(config.epochs, 'epoch')} already; nothing to train (--epochs N extends it)", file=sys.stderr)
        elif run.resumed and dist_utils.is_main_process():
            print(f"note: resuming {out} after epoch {run.start_epoch} of {config.epochs}", file=sys.stderr)
        record = start_run_folder(run)
        for epoch in range(run.start_epoch, config.epochs):
            record = train_one_epoch(run, epoch)
            if (epoch + 1) % config.eval.every == 0 or epoch + 1 == config.epochs:
                record.update(evaluate(run.raw, run.test_set, config, run.device, epoch, run.num_classes))
            if dist_utils.is_main_process():
                append_jsonl(out / METRICS_FILE, record)
                save_checkpoint(run, epoch + 1)
            dist_utils.barrier()
    return {**record, "out": str(out), "checkpoint": str(out / MODEL_FILE)}


def default_run_folder(config: TrainConfig) -> Path:
    """Where a run goes when the user names no folder: ``runs/<dataset>_<arch>_<method>``."""
    return Path("runs") / f"{config.dataset}_{config.arch}_{config.method}"


def summary_line(record: Dict[str, Any]) -> str:
    """What `wsol train` prints when it ends: the last epoch's record of ``metrics.jsonl`` under the same keys, test
    results first, with the accuracies in percent as every wsol report gives them (the file keeps fractions of 1 for
    programs, and the second line says so) and each other number's unit. A finished run whose ``metrics.jsonl`` is gone
    has no record to show, and the line says so."""
    if "epoch" not in record:
        return f"no epoch record to show: {METRICS_FILE} holds none (a finished run whose file was removed)"
    shown = [f"epoch {record['epoch']} ({record['method']})"]
    for key in sorted(record, key=lambda k: not k.startswith("test/")):
        value = record[key]
        if key in ("epoch", "method", "out", "checkpoint", "test/count"):
            continue
        if key.endswith("acc"):
            count = f" of {record['test/count']} test images" if key == "test/acc" and "test/count" in record else ""
            shown.append(f"{key} {100 * value:.2f} %{count}")
        elif key == "images_per_s":
            shown.append(f"{value:.1f} images/s")
        elif key == "time_s":
            shown.append(f"epoch time {value:.1f} s")
        else:
            shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(shown) + f"\n{METRICS_FILE} keeps one record per epoch, its accuracies as fractions of 1"


# ----------------------------------------------------------------------------- building the run


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    config: TrainConfig
    out: Path
    device: torch.device
    model: nn.Module  # what the step functions call (DistributedDataParallel under torchrun)
    raw: nn.Module  # the bare model: evaluation, attacks and checkpoints
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_set: Dataset
    test_set: Dataset
    class_names: List[str]
    num_classes: int
    start_epoch: int
    resumed: bool


def build_run(
    config: TrainConfig,
    out: Path,
    resume: bool,
    device: Union[str, torch.device, None],
    train_set: Optional[Dataset] = None,
    test_set: Optional[Dataset] = None,
) -> Run:
    """Check the config, load the resume state if any, build datasets, model, optimizer and schedule."""
    world = dist_utils.world_size()
    dev = _device_for(device)
    cuda = dev.type == "cuda"
    check_schedule(config.schedule)
    if config.batch_size % world:
        raise ConfigError(f"batch_size {config.batch_size} is the global batch and must be divisible by the {world} processes")
    get_method(config.method)
    if cuda:
        torch.backends.cudnn.benchmark = True
    state = _resume_state(config, out, resume)

    if train_set is None or test_set is None:
        built_train, built_test = build_datasets(config)
        train_set = train_set if train_set is not None else built_train
        test_set = test_set if test_set is not None else built_test
    require_images(train_set, config.dataset, "train")
    require_images(test_set, config.dataset, "test")
    check_images(test_set)
    class_names = list(getattr(train_set, "class_names", []))
    num_classes = int(getattr(train_set, "num_classes", len(class_names)))
    if num_classes < 2:
        raise ConfigError(f"dataset {config.dataset!r} has {num_classes} classes; training needs at least 2")

    seed_everything(config.seed)
    model, start_epoch = _build_model(config, train_set, num_classes, state)
    model.to(dev)
    if cuda and config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.sync_bn and world > 1:
        if not cuda:
            raise ConfigError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); set sync_bn: false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config.schedule, e))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    elif start_epoch:
        fast_forward(scheduler, config.schedule, start_epoch)
    wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if cuda else None) if world > 1 else model
    return Run(config, out, dev, wrapped, model, optimizer, scheduler, train_set, test_set, class_names, num_classes, start_epoch, state is not None)


def saved_epochs(out: Path) -> Optional[int]:
    """The epoch count of the run in ``out``: its ``config.yaml``, else (missing or unreadable) the config kept in its
    training state, which is what a resume continues; None when neither says (no run there yet)."""
    import yaml

    try:
        saved = yaml.safe_load((Path(out) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict) and (Path(out) / STATE_FILE).is_file():
        try:
            saved = load_train_state(Path(out) / STATE_FILE).get("config")
        except (OSError, RuntimeError, WsolError):
            saved = None  # the resume check reports the unreadable state
    epochs = saved.get("epochs") if isinstance(saved, dict) else None
    return epochs if isinstance(epochs, int) and epochs > 0 else None


def _resume_state(config: TrainConfig, out: Path, resume: bool) -> Optional[Dict[str, Any]]:
    """The saved training state of ``out`` (None for a fresh run), checked against ``config``."""
    state_path = out / STATE_FILE
    if not state_path.is_file():
        return None
    if not resume:
        raise WsolError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    state = load_train_state(state_path)
    saved = {**config_to_dict(TrainConfig()), **state["config"]}  # a key added to the config since the run was saved has its default
    new = config_to_dict(config)
    diffs = [d for d in config_differences(saved, new) if not d.startswith(_RESUMABLE)]
    if diffs:
        raise ConfigError(f"cannot resume {out}: the config differs from the saved one ({differences_text(diffs[:5], saved, new)})")
    done = int(state.get("epoch", 0))
    if done > config.epochs:
        raise ConfigError(f"cannot resume {out} to {config.epochs} epochs: it has done {done} already, and a resume only extends a run; "
                          f"give --epochs {done} or more, or train the shorter run into another --out")
    return state


def _build_model(config: TrainConfig, train_set: Dataset, num_classes: int, state: Optional[Dict[str, Any]]) -> Tuple[nn.Module, int]:
    """The model and the epoch it starts at: resumed weights, a warm start, initial weights or fresh."""
    stats = {k: getattr(train_set, k) for k in ("mean", "std") if getattr(train_set, k, None) is not None}
    size = transform_spec(config)["size"] or getattr(train_set, "native_size", None)
    # resuming: the weights come from the state; a warm start loads a model that stands in for the warm-up
    key, weights = ("warm_start", config.warm_start) if config.warm_start is not None else ("weights", config.weights)
    weights = weights if state is None else None
    flag = "--warm-start" if key == "warm_start" else "--weights"
    if weights is not None and Path(weights).is_dir():
        raise ConfigError(f"initial weights {weights} is a folder (the config's `{key}`); "
                          f"pass the model file in it to {flag}, e.g. {Path(weights) / 'model.safetensors'}")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(
            f"initial weights {weights} not found (the config's `{key}`): train or fetch that model first, or pass {flag} FILE"
        )
    model = build_model(config.arch, num_classes, weights=weights, input_size=size, **stats)
    start_epoch = config.warmup_epochs if config.warm_start is not None else 0
    if state is not None:
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
    return model, start_epoch


def start_run_folder(run: Run) -> Dict[str, Any]:
    """Write ``config.yaml`` and bring ``metrics.jsonl`` to the start epoch (trimmed on resume,
    removed on a fresh run); returns the last kept record when no epoch is left to train."""
    metrics_path = run.out / METRICS_FILE
    kept: List[Dict[str, Any]] = []
    if dist_utils.is_main_process():
        atomic_write_text(run.out / CONFIG_FILE, config_to_yaml(run.config))
        if run.resumed:
            kept = keep_records_until(metrics_path, run.start_epoch)
        elif metrics_path.exists():
            metrics_path.unlink()
    dist_utils.barrier()
    return (kept or [{}])[-1] if run.start_epoch >= run.config.epochs else {}


# ----------------------------------------------------------------------------- data


def _collate_xy(samples: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack only what training needs (images, labels) from a list of Samples; images of several sizes (transform
    'none' on CUB, GTSRB, ...) are a DataError naming the fix, not torch.stack's traceback."""
    try:
        images = torch.stack([s.image for s in samples])
    except RuntimeError:  # the sizes are looked at only then: this runs for every training batch
        sizes = sorted({"×".join(map(str, s.image.shape[-2:])) for s in samples})
        if len(sizes) < 2:
            raise
        raise DataError(f"the images of a batch differ in size ({', '.join(sizes[:3])} pixels): transform 'none' keeps each at its "
                        "size on disk; give a transform that resizes, e.g. --set transform=cub --set image_size=224") from None
    return images, torch.tensor([int(s.label) for s in samples], dtype=torch.long)


def _resolve_root(config: TrainConfig) -> Path:
    if config.root:
        return Path(config.root)
    if config.dataset == "shapes":
        from wsol.data.shapes import ensure_shapes

        return ensure_shapes()
    raise ConfigError(f"dataset {config.dataset!r} needs a root folder: pass --root DIR (or set root: in the config)")


def transform_spec(config: TrainConfig) -> Dict[str, Any]:
    """The transform a run applies, as its checkpoint records it: ``{"kind", "size"}`` (size None:
    images go in at their size on disk)."""
    if config.transform == "none" and config.image_size is None:
        return {"kind": "none", "size": None}
    return {"kind": config.transform, "size": config.image_size or arch_spec(config.arch).input_size}


def transform_from_spec(spec: Dict[str, Any], train: bool, seed: int = 0) -> Any:
    """The transform :func:`transform_spec` describes (None: the dataset's plain tensor conversion)."""
    if spec["kind"] == "none" and spec["size"] is None:
        return None
    from wsol.data.transforms import build_transform

    return build_transform(spec["kind"], train, int(spec["size"]), seed=seed)


def _transform(config: TrainConfig, train: bool) -> Any:
    return transform_from_spec(transform_spec(config), train, seed=config.seed)


def check_images(dataset: Dataset) -> None:
    """Raise a DataError naming the first unusable image file or GT box of ``dataset`` (header check
    only), so a corrupt test image or a box past its image stops the run before anything is written
    instead of after an epoch."""
    from wsol.data.base import probe_image
    from wsol.data.verify import box_problem

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    bad = []
    for record in getattr(base, "records", []):
        path = getattr(record, "image_path", None)
        problem = probe_image(path) if path is not None else None
        if problem is not None:
            bad.append((path, problem))
        elif path is not None and (boxes_wrong := box_problem(record)) is not None:
            raise DataError(boxes_wrong)
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"image {bad[0][0]} is unusable ({bad[0][1]}){more}; replace it or run `wsol data verify` to list them")


def build_datasets(config: TrainConfig) -> Tuple[Dataset, Dataset]:
    """The train and test splits of ``config.dataset`` with the configured transforms and loader options."""
    from wsol.data.registry import build_dataset, load_all

    factory = load_all().get(config.dataset)
    splits = getattr(factory, "splits", ("train", "test"))
    test_split = "test" if "test" in splits else splits[-1]
    root = _resolve_root(config)
    train_set = build_dataset(config.dataset, root, "train", _transform(config, True), **config.dataset_options)
    test_set = build_dataset(config.dataset, root, test_split, _transform(config, False), **config.dataset_options)
    return train_set, test_set


def _reseed_transform(dataset: Any, seed: int) -> None:
    """Reseed the random augmentation of ``dataset`` (an object with ``set_random_seed``, or one held
    by its transform) so that in-process augmentation is a function of (seed, epoch); DataLoader
    workers reseed themselves from their torch seed, itself drawn from the epoch's generator."""
    transform = getattr(dataset, "transform", None)
    if isinstance(dataset, Subset):
        transform = getattr(dataset.dataset, "transform", None)
    for obj in [transform, *vars(transform).values()] if hasattr(transform, "__dict__") else [transform]:
        if hasattr(obj, "set_random_seed"):
            obj.set_random_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] % 2**62)


def _epoch_loader(run: Run, epoch: int, epoch_seed: int) -> DataLoader:
    """This rank's loader for ``epoch``: DistributedSampler order and worker seeds from the epoch seed."""
    config = run.config
    rank, world = dist_utils.rank(), dist_utils.world_size()
    sampler = DistributedSampler(run.train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=world > 1)
    sampler.set_epoch(epoch)
    return DataLoader(
        run.train_set,
        batch_size=config.batch_size // world,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=_collate_xy,
        drop_last=len(run.train_set) >= config.batch_size,
        pin_memory=run.device.type == "cuda",
        worker_init_fn=_worker_init if config.workers > 0 else None,
        generator=torch.Generator().manual_seed(epoch_seed % 2**63),
        persistent_workers=False,
    )


# ----------------------------------------------------------------------------- optimization


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD over all parameters; the head (and layers new to a pretrained backbone) get ``head_lr_mult``."""
    o = config.optim
    spec = arch_spec(config.arch)
    fresh_prefixes = tuple("net." + p for p in spec.head_prefixes + spec.new_prefixes)
    head, body = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if name.startswith(fresh_prefixes) else body).append(param)
    groups = [{"params": body, "lr": o.lr}]
    if head:
        groups.append({"params": head, "lr": o.lr * o.head_lr_mult})
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)


def lr_factor(schedule: ScheduleConfig, epoch: int) -> float:
    """Multiplier of the base learning rate during (0-based) ``epoch``."""
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "step":
        return schedule.gamma ** (epoch // schedule.step_size) if schedule.step_size > 0 else 1.0
    factor = 1.0
    for i, milestone in enumerate(schedule.milestones):
        if epoch >= milestone:
            factor *= schedule.gammas[i] if i < len(schedule.gammas) else schedule.gamma
    return factor


def check_schedule(schedule: ScheduleConfig) -> None:
    """Raise a ConfigError for a schedule :func:`lr_factor` cannot follow."""
    if schedule.kind == "step" and schedule.step_size <= 0:
        raise ConfigError("schedule.step_size must be positive for schedule.kind=step")
    if schedule.gammas and len(schedule.gammas) != len(schedule.milestones):
        raise ConfigError("schedule.gammas must have one entry per milestone (or be empty to use schedule.gamma)")
    if list(schedule.milestones) != sorted(schedule.milestones):
        raise ConfigError("schedule.milestones must be increasing")


def fast_forward(scheduler: torch.optim.lr_scheduler.LambdaLR, schedule: ScheduleConfig, epoch: int) -> None:
    """Put a fresh scheduler (and its optimizer's learning rates) where it would be at ``epoch``."""
    scheduler.last_epoch = epoch
    factor = lr_factor(schedule, epoch)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * factor
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


# ----------------------------------------------------------------------------- one epoch


def train_one_epoch(run: Run, epoch: int) -> Dict[str, Any]:
    """Reseed from (seed, epoch), run the method's step over this rank's batches, step the schedule;
    returns the epoch's record (losses and accuracy averaged over all ranks, learning rate, speed)."""
    config = run.config
    epoch_seed = _derived_seed(config.seed, 1, epoch)
    seed_everything(epoch_seed % 2**63)
    _reseed_transform(run.train_set, epoch_seed % 2**32)
    loader = _epoch_loader(run, epoch, epoch_seed)
    warmup = epoch < config.warmup_epochs
    step_fn = natural_step if warmup else get_method(config.method)
    method = "natural" if warmup else config.method
    total = len(loader) if config.max_train_batches is None else min(len(loader), config.max_train_batches)
    bar = progress(loader, desc=f"{method}{' (warm-up)' if warmup else ''} epoch {epoch + 1}/{config.epochs}", total=total)
    run.model.train()
    sums: Dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.float64)
    seen = 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        x, y = _to_device(x, y, run.device, config)
        if x.shape[-1] == x.shape[-2]:  # the checkpoint records the size the model really sees
            run.raw.input_size = int(x.shape[-1])
        init_delta = _start_delta(config, epoch, step, x)
        with _autocast(config, run.device):
            result = step_fn(run.model, x, y, config, init_delta=init_delta)
        _check_finite(result.loss, run, method, epoch, step)
        run.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        run.optimizer.step()
        seen += len(y)
        for key, value in {"loss": result.loss.detach(), **result.terms}.items():
            sums[key] = sums.get(key, 0.0) + value.detach().double().cpu() * len(y)
        correct += (result.logits.detach().argmax(1) == y).sum().cpu()
        if hasattr(bar, "set_postfix") and step % 10 == 0:
            bar.set_postfix(loss=f"{result.loss.item():.3f}")
    elapsed = time.perf_counter() - start
    record = _epoch_record(epoch, method, correct, seen, sums, elapsed)
    record["lr"] = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return record


def _check_finite(loss: torch.Tensor, run: Run, method: str, epoch: int, step: int) -> None:
    """Stop every rank with NonFiniteLossError when any rank's loss is NaN or infinite."""
    finite = torch.isfinite(loss.detach()).to(torch.float64).reshape(1).cpu()
    dist_utils.all_reduce_sum(finite)
    if finite.item() >= dist_utils.world_size():
        return
    model_file = run.out / MODEL_FILE
    kept = (
        f"{model_file} holds the last good epoch ({epoch}); lower optim.lr and train into a new --out "
        f"(--weights {model_file} starts from it)"
        if epoch > 0 and model_file.is_file()
        else "no checkpoint was written yet; lower optim.lr and start again"
    )
    raise NonFiniteLossError(f"{method} training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped: {kept}")


def _epoch_record(epoch: int, method: str, correct: torch.Tensor, seen: int, sums: Dict[str, torch.Tensor], elapsed: float) -> Dict[str, Any]:
    totals = torch.stack([correct, torch.tensor(float(seen), dtype=torch.float64), *[sums[k] for k in sorted(sums)]])
    dist_utils.all_reduce_sum(totals)
    count = max(totals[1].item(), 1.0)
    record: Dict[str, Any] = {"epoch": epoch + 1, "method": method}
    for i, key in enumerate(sorted(sums)):
        record[f"train/{key}"] = totals[2 + i].item() / count
    record["train/acc"] = totals[0].item() / count
    record["images_per_s"] = count / max(elapsed, 1e-9)
    record["time_s"] = elapsed
    return record


def _start_delta(config: TrainConfig, epoch: int, step: int, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The attack's random start for this rank's rows of the global batch (None for natural training
    and the warm-up epochs)."""
    eps = start_eps(config)
    if eps <= 0 or epoch < config.warmup_epochs:
        return None
    gen_device = x.device if x.device.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(_derived_seed(config.seed, 3, epoch, step))
    return random_delta(x, eps, gen, shard=(dist_utils.rank(), dist_utils.world_size()))


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalCounts:
    """Per-class counts of one evaluation, summed over ranks: images, clean hits and (when
    ``pgd_steps`` > 0) hits under PGD-k; all float64 tensors of length num_classes."""

    total: torch.Tensor
    correct: torch.Tensor
    pgd_correct: Optional[torch.Tensor]
    pgd_steps: int

    def summary(self) -> Dict[str, Any]:
        """The accuracy record of ``metrics.jsonl``: test/acc, test/count (and test/pgd<k>_acc)."""
        count = max(self.total.sum().item(), 1.0)
        out: Dict[str, Any] = {"test/acc": self.correct.sum().item() / count, "test/count": int(self.total.sum().item())}
        if self.pgd_correct is not None:
            out[f"test/pgd{self.pgd_steps}_acc"] = self.pgd_correct.sum().item() / count
        return out


def evaluate_counts(
    model: nn.Module, dataset: Dataset, config: TrainConfig, device: torch.device, epoch: int = 0, num_classes: Optional[int] = None
) -> EvalCounts:
    """Per-class clean (and PGD-k when ``eval.pgd.steps`` > 0) hits on ``dataset``; ranks share it.

    ``num_classes`` defaults to the model's ``num_classes``. The PGD random starts are seeded by
    (seed, epoch, batch, rank), so an evaluation is reproducible.
    """
    ev = config.eval
    k = int(num_classes if num_classes is not None else getattr(model, "num_classes"))
    rank = dist_utils.rank()
    loader = DataLoader(shard(dataset), batch_size=config.eval_batch_size, shuffle=False, num_workers=config.workers, collate_fn=_collate_xy)
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, k, dtype=torch.float64)
    for step, (x, y) in enumerate(loader):
        if ev.max_batches is not None and step >= ev.max_batches:
            break
        x, y = _to_device(x, y, device, config)
        with _autocast(config, device):
            counts[1] += _per_class(y[model(x).argmax(1) == y], k)
            if ev.pgd.steps > 0:
                gen = torch.Generator(device=device).manual_seed(_derived_seed(config.seed, 7, epoch, step, rank))
                with torch.enable_grad():
                    x_adv = pgd_attack(model, x, y, ev.pgd.eps, ev.pgd.step_size, ev.pgd.steps, generator=gen)
                counts[2] += _per_class(y[model(x_adv).argmax(1) == y], k)
        counts[0] += _per_class(y, k)
    model.train(was_training)
    dist_utils.all_reduce_sum(counts)
    return EvalCounts(counts[0], counts[1], counts[2] if ev.pgd.steps > 0 else None, ev.pgd.steps)


def evaluate(
    model: nn.Module, dataset: Dataset, config: TrainConfig, device: torch.device, epoch: int = 0, num_classes: Optional[int] = None
) -> Dict[str, Any]:
    """Top-1 accuracy (and PGD-k accuracy when ``eval.pgd.steps`` > 0) on ``dataset``; ranks share it."""
    return evaluate_counts(model, dataset, config, device, epoch, num_classes).summary()


def _per_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels.cpu(), minlength=num_classes).to(torch.float64)


# ----------------------------------------------------------------------------- checkpointing


def save_checkpoint(run: Run, epoch: int) -> None:
    """Write ``model.safetensors`` + ``model.json``, then ``train_state.pt`` (the commit point resume
    reads), after ``epoch`` epochs."""
    config = run.config
    meta = {
        "dataset": config.dataset,
        "method": config.method,
        "epoch": epoch,
        "class_names": run.class_names,
        "eval_transform": transform_spec(config),
        "config": config_to_dict(config),
    }
    save_model(run.raw, run.out / MODEL_FILE, **meta)
    save_train_state(
        run.out / STATE_FILE,
        {
            "model": {k: v.detach().cpu() for k, v in run.raw.state_dict().items()},
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "epoch": epoch,
            "rng": rng_state(),
            "config": config_to_dict(config),
        },
    )


# ----------------------------------------------------------------------------- helpers


def _autocast(config: TrainConfig, device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if (config.amp and device.type == "cuda") else nullcontext()


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, config: TrainConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    cuda = device.type == "cuda"
    x = x.to(device, non_blocking=cuda)
    if cuda and config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=cuda)


def _device_for(device: Union[str, torch.device, None]) -> torch.device:
    if isinstance(device, torch.device):
        return device
    dev = select_device(device)
    if dev.type == "cuda" and dev.index is None and dist_utils.is_distributed():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


__all__ = [
    "EvalCounts",
    "NonFiniteLossError",
    "Run",
    "build_datasets",
    "build_optimizer",
    "build_run",
    "check_images",
    "check_schedule",
    "default_run_folder",
    "evaluate",
    "evaluate_counts",
    "fast_forward",
    "lr_factor",
    "save_checkpoint",
    "start_run_folder",
    "train",
    "train_one_epoch",
    "transform_from_spec",
    "transform_spec",
]
