"""The training loop shared by every method: data, SGD + schedule, evaluation, checkpoints, resume, DDP.

One run writes into one folder: ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per epoch),
``train_state.pt`` (everything needed to resume: weights, optimizer, scheduler, epoch, RNG) and
``model.safetensors`` + ``model.json`` (the model for every other wsol command). Both checkpoint
files are written atomically after every epoch; resume reads ``train_state.pt`` only, so a kill
between the two writes is harmless.

Reproducibility: the data order is a function of (seed, epoch) (DistributedSampler.set_epoch), the
global RNGs are reseeded from (seed, epoch) at the start of every epoch, and the random starts of
the attacks are drawn per step from a generator seeded by (seed, epoch, step) for the whole global
batch, each rank taking its own rows. Hence a resumed run continues bit-for-bit (on CPU), and a
DDP run sees the same batches and starts as a single process with the same global batch.

Launched by ``torchrun`` (WORLD_SIZE > 1) the same call trains with DistributedDataParallel:
``config.batch_size`` is the global batch (split evenly across ranks), only rank 0 writes.
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from wsol.attacks import pgd_attack, random_delta
from wsol.config import ScheduleConfig, TrainConfig, config_to_dict, config_to_yaml, load_config
from wsol.errors import ConfigError, WsolError
from wsol.models import build_model, save_model
from wsol.models.build import arch_spec
from wsol.models.checkpoint import load_train_state, save_train_state
from wsol.train.methods import get_method, natural_step, start_eps
from wsol.utils import distributed as dist_utils
from wsol.utils.device import select_device
from wsol.utils.io import append_jsonl, atomic_write_text, read_jsonl
from wsol.utils.progress import progress
from wsol.utils.seeding import rng_state, seed_everything, set_rng_state

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
# config keys that may change between a run and its resumption (they do not change the weights)
_RESUMABLE = ("epochs", "root", "weights", "warm_start", "workers", "eval_batch_size", "eval.")


class NonFiniteLossError(WsolError):
    """The training loss became NaN or infinite; the run stopped before saving anything of it."""


# ----------------------------------------------------------------------------- configs


def configs_dir() -> Path:
    """The repository's ``configs/`` folder (shipped YAML files for every paper setting)."""
    return Path(__file__).resolve().parents[2] / "configs"


def _arch_token(arch: str) -> str:
    return arch.replace("wrn-", "wrn")


def default_config_path(dataset: str, method: str, arch: Optional[str] = None, folder: Optional[Path] = None) -> Optional[Path]:
    """The shipped config ``<dataset>_<arch>_<method>.yaml`` for this setting, or None if none fits.

    Without ``arch`` the dataset must have exactly one architecture for ``method``; several
    matches (CUB: resnet50 and vgg16-gap) are a ConfigError asking for ``--arch``.
    """
    folder = folder or configs_dir()
    if not folder.is_dir():
        return None
    if arch is not None:
        path = folder / f"{dataset}_{_arch_token(arch)}_{method}.yaml"
        return path if path.is_file() else None
    matches = sorted(folder.glob(f"{dataset}_*_{method}.yaml"))
    matches = [p for p in matches if p.name.count("_") == 2]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise ConfigError(f"several configs fit {dataset}/{method} ({names}); pass --arch or --config")
    return matches[0] if matches else None


def resolve_train_config(
    dataset: str,
    method: Optional[str] = None,
    config_path: Optional[Union[str, Path]] = None,
    arch: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
) -> Tuple[TrainConfig, Optional[Path]]:
    """The run config: ``config_path`` (or the shipped ``<dataset>_<arch>_<method>.yaml``, or the
    defaults), then ``overrides`` (dotted keys), then ``dataset``/``method``/``arch``. Returns it with
    the YAML file used. Without ``method`` the config's method is kept (natural for the defaults)."""
    if config_path is not None:
        path: Optional[Path] = Path(config_path)
    else:
        path = default_config_path(dataset, method or "natural", arch)
    merged: Dict[str, Any] = dict(overrides or {})
    merged["dataset"] = dataset
    if method is not None:
        merged["method"] = method
    if arch is not None:
        merged["arch"] = arch
    return load_config(path, merged), path


# ----------------------------------------------------------------------------- data


def _collate_xy(samples: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack only what training needs (images, labels) from a list of Samples."""
    return torch.stack([s.image for s in samples]), torch.tensor([int(s.label) for s in samples], dtype=torch.long)


def _resolve_root(config: TrainConfig) -> Path:
    if config.root:
        return Path(config.root)
    if config.dataset == "shapes":
        from wsol.data.shapes import ensure_shapes

        return ensure_shapes()
    raise ConfigError(f"dataset {config.dataset!r} needs a root folder: pass --root DIR (or set root: in the config)")


def _transform(config: TrainConfig, train: bool) -> Any:
    if config.transform == "none" and config.image_size is None:
        return None
    from wsol.data.transforms import build_transform

    size = config.image_size or arch_spec(config.arch).input_size
    return build_transform(config.transform, train, size, seed=config.seed)


def build_datasets(config: TrainConfig) -> Tuple[Dataset, Dataset]:
    """The train and test splits of ``config.dataset`` with the configured transforms."""
    from wsol.data.registry import build_dataset, load_all

    factory = load_all().get(config.dataset)
    splits = getattr(factory, "splits", ("train", "test"))
    test_split = "test" if "test" in splits else splits[-1]
    root = _resolve_root(config)
    train_set = build_dataset(config.dataset, root, "train", _transform(config, True))
    test_set = build_dataset(config.dataset, root, test_split, _transform(config, False))
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


# ----------------------------------------------------------------------------- optimization


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD over all parameters; the head (and layers new to a pretrained backbone) get ``head_lr_mult``."""
    o = config.optim
    spec = arch_spec(config.arch)
    fresh = ("net." + p for p in spec.head_prefixes + spec.new_prefixes)
    fresh_prefixes = tuple(fresh)
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


def _check_schedule(schedule: ScheduleConfig) -> None:
    if schedule.kind == "step" and schedule.step_size <= 0:
        raise ConfigError("schedule.step_size must be positive for schedule.kind=step")
    if schedule.gammas and len(schedule.gammas) != len(schedule.milestones):
        raise ConfigError("schedule.gammas must have one entry per milestone (or be empty to use schedule.gamma)")
    if list(schedule.milestones) != sorted(schedule.milestones):
        raise ConfigError("schedule.milestones must be increasing")


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    device: torch.device,
    epoch: int = 0,
) -> Dict[str, float]:
    """Clean accuracy (and PGD-k accuracy when ``eval.pgd.steps`` > 0) on ``dataset``; ranks share it."""
    ev = config.eval
    rank, world = dist_utils.rank(), dist_utils.world_size()
    shard = Subset(dataset, list(range(rank, len(dataset), world)))
    loader = DataLoader(shard, batch_size=config.eval_batch_size, shuffle=False, num_workers=config.workers, collate_fn=_collate_xy)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if (config.amp and cuda) else nullcontext()
    for step, (x, y) in enumerate(loader):
        if ev.max_batches is not None and step >= ev.max_batches:
            break
        x, y = _to_device(x, y, device, config)
        with autocast:
            totals[0] += (model(x).argmax(1) == y).sum().item()
            if ev.pgd.steps > 0:
                gen = torch.Generator(device=device).manual_seed(_derived_seed(config.seed, 7, epoch, step, rank))
                with torch.enable_grad():
                    x_adv = pgd_attack(model, x, y, ev.pgd.eps, ev.pgd.step_size, ev.pgd.steps, generator=gen)
                totals[1] += (model(x_adv).argmax(1) == y).sum().item()
        totals[2] += len(y)
    model.train(was_training)
    dist_utils.all_reduce_sum(totals)
    count = max(totals[2].item(), 1.0)
    out = {"test/acc": totals[0].item() / count, "test/count": int(totals[2].item())}
    if ev.pgd.steps > 0:
        out[f"test/pgd{ev.pgd.steps}_acc"] = totals[1].item() / count
    return out


# ----------------------------------------------------------------------------- helpers


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, config: TrainConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    cuda = device.type == "cuda"
    x = x.to(device, non_blocking=cuda)
    if cuda and config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=cuda)


def _start_delta(config: TrainConfig, epoch: int, step: int, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The attack's random start for this rank's rows of the global batch (None for natural training
    and the warm-up epochs)."""
    eps = start_eps(config)
    if eps <= 0 or epoch < config.warmup_epochs:
        return None
    gen_device = x.device if x.device.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(_derived_seed(config.seed, 3, epoch, step))
    return random_delta(x, eps, gen, shard=(dist_utils.rank(), dist_utils.world_size()))


def _fast_forward(scheduler: torch.optim.lr_scheduler.LambdaLR, schedule: ScheduleConfig, epoch: int) -> None:
    """Put a fresh scheduler (and its optimizer's learning rates) where it would be at ``epoch``."""
    scheduler.last_epoch = epoch
    factor = lr_factor(schedule, epoch)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * factor
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _config_differences(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_differences(a, b, prefix + key + ".")
        elif a != b:
            diffs.append(prefix + key)
    return diffs


def _device_for(device: Union[str, torch.device, None]) -> torch.device:
    if isinstance(device, torch.device):
        return device
    dev = select_device(device)
    if dev.type == "cuda" and dev.index is None and dist_utils.is_distributed():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


# ----------------------------------------------------------------------------- train


def train(
    config: TrainConfig,
    out: Union[str, Path],
    resume: bool = False,
    device: Union[str, torch.device, None] = None,
    *,
    train_set: Optional[Dataset] = None,
    test_set: Optional[Dataset] = None,
) -> Dict[str, Any]:
    """Train ``config.method`` on ``config.dataset`` into folder ``out``; returns the last epoch's metrics.

    ``resume=True`` continues from ``out/train_state.pt`` when it exists (and starts fresh when it
    does not); the config may differ from the saved one only in ``epochs``, ``root``, ``weights``,
    ``workers`` and the evaluation settings. ``train_set`` /
    ``test_set`` replace the datasets built from the config (any Dataset of Samples).

    Under torchrun the process group is created on the first call and left open, so one process
    can train several models (re-creating a group on the same rendezvous store can hang); call
    :func:`wsol.utils.distributed.cleanup` when done.
    """
    dist_utils.init_from_env()
    return _train(config, Path(out), resume, device, train_set, test_set)


def _train(
    config: TrainConfig,
    out: Path,
    resume: bool,
    device: Union[str, torch.device, None],
    train_set: Optional[Dataset],
    test_set: Optional[Dataset],
) -> Dict[str, Any]:
    rank, world = dist_utils.rank(), dist_utils.world_size()
    main = rank == 0
    dev = _device_for(device)
    cuda = dev.type == "cuda"
    _check_schedule(config.schedule)
    if config.batch_size % world:
        raise ConfigError(f"batch_size {config.batch_size} is the global batch and must be divisible by the {world} processes")
    local_batch = config.batch_size // world
    step_fn = get_method(config.method)
    if cuda:
        torch.backends.cudnn.benchmark = True

    state_path = out / STATE_FILE
    state = None
    if state_path.is_file():
        if not resume:
            raise WsolError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
        state = load_train_state(state_path)
        diffs = [d for d in _config_differences(state["config"], config_to_dict(config)) if not d.startswith(_RESUMABLE)]
        if diffs:
            raise ConfigError(f"cannot resume {out}: the config differs from the saved one in {', '.join(diffs[:5])}")

    if train_set is None or test_set is None:
        built_train, built_test = build_datasets(config)
        train_set = train_set if train_set is not None else built_train
        test_set = test_set if test_set is not None else built_test
    class_names = list(getattr(train_set, "class_names", []))
    num_classes = int(getattr(train_set, "num_classes", len(class_names)))
    if num_classes < 2:
        raise ConfigError(f"dataset {config.dataset!r} has {num_classes} classes; training needs at least 2")

    seed_everything(config.seed)
    stats = {k: getattr(train_set, k) for k in ("mean", "std") if getattr(train_set, k, None) is not None}
    size = config.image_size or getattr(train_set, "native_size", None)
    # resuming: the weights come from the state; a warm start loads a model that stands in for the warm-up
    key, weights = ("warm_start", config.warm_start) if config.warm_start is not None else ("weights", config.weights)
    weights = weights if state is None else None
    if weights is not None and not Path(weights).is_file():
        flag = "--warm-start" if key == "warm_start" else "--weights"
        raise ConfigError(
            f"initial weights {weights} not found (the config's `{key}`): train or fetch that model first, or pass {flag} FILE"
        )
    model = build_model(config.arch, num_classes, weights=weights, input_size=size, **stats)
    start_epoch = config.warmup_epochs if config.warm_start is not None else 0
    if state is not None:
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
    model.to(dev)
    if cuda and config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.sync_bn and world > 1:
        if not cuda:
            raise ConfigError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); set sync_bn: false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw = model
    optimizer = build_optimizer(raw, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config.schedule, e))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    elif start_epoch:
        _fast_forward(scheduler, config.schedule, start_epoch)
    if world > 1:
        ids = [dev.index] if cuda else None
        model = nn.parallel.DistributedDataParallel(raw, device_ids=ids)

    metrics_path = out / METRICS_FILE
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG_FILE, config_to_yaml(config))
        if state is not None:
            kept = [r for r in read_jsonl(metrics_path) if int(r.get("epoch", 0)) <= start_epoch]
            atomic_write_text(metrics_path, "".join(_json_line(r) for r in kept))
        elif metrics_path.exists():
            metrics_path.unlink()
    dist_utils.barrier()

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=world > 1)
    drop_last = len(train_set) >= config.batch_size
    record: Dict[str, Any] = {}
    if start_epoch >= config.epochs and main:
        record = (read_jsonl(metrics_path) or [{}])[-1]
    for epoch in range(start_epoch, config.epochs):
        epoch_seed = _derived_seed(config.seed, 1, epoch)
        seed_everything(epoch_seed % 2**63)
        _reseed_transform(train_set, epoch_seed % 2**32)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=local_batch,
            sampler=sampler,
            num_workers=config.workers,
            collate_fn=_collate_xy,
            drop_last=drop_last,
            pin_memory=cuda,
            worker_init_fn=_worker_init if config.workers > 0 else None,
            generator=torch.Generator().manual_seed(epoch_seed % 2**63),
            persistent_workers=False,
        )
        epoch_step = natural_step if epoch < config.warmup_epochs else step_fn
        record = _train_epoch(model, raw, loader, optimizer, epoch_step, config, dev, epoch, out)
        record["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        last = epoch + 1 == config.epochs
        if (epoch + 1) % config.eval.every == 0 or last:
            record.update(evaluate(raw, test_set, config, dev, epoch))
        if main:
            append_jsonl(metrics_path, record)
            meta = {"dataset": config.dataset, "method": config.method, "epoch": epoch + 1, "class_names": class_names, "config": config_to_dict(config)}
            save_train_state(
                state_path,
                {
                    "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "rng": rng_state(),
                    "config": config_to_dict(config),
                },
            )
            save_model(raw, out / MODEL_FILE, **meta)
        dist_utils.barrier()
    return {**record, "out": str(out), "checkpoint": str(out / MODEL_FILE)}


def _json_line(record: Dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def _train_epoch(
    model: nn.Module,
    raw: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    step_fn: Any,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    out: Path,
) -> Dict[str, Any]:
    world = dist_utils.world_size()
    cuda = device.type == "cuda"
    model.train()
    sums: Dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.float64)
    seen = 0
    total = len(loader) if config.max_train_batches is None else min(len(loader), config.max_train_batches)
    warmup = epoch < config.warmup_epochs
    method = "natural" if warmup else config.method
    bar = progress(loader, desc=f"{method}{' (warm-up)' if warmup else ''} epoch {epoch + 1}/{config.epochs}", total=total)
    start = time.perf_counter()
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        x, y = _to_device(x, y, device, config)
        init_delta = _start_delta(config, epoch, step, x)
        with torch.autocast(device.type, dtype=torch.bfloat16) if (config.amp and cuda) else nullcontext():
            result = step_fn(model, x, y, config, init_delta=init_delta)
        loss = result.loss
        finite = torch.isfinite(loss.detach()).to(torch.float64).reshape(1).cpu()
        dist_utils.all_reduce_sum(finite)
        if finite.item() < world:
            kept = (
                f"{out / MODEL_FILE} holds the last good epoch ({epoch}); lower optim.lr and train into a new --out "
                f"(--weights {out / MODEL_FILE} starts from it)"
                if epoch > 0 and (out / MODEL_FILE).is_file()
                else "no checkpoint was written yet; lower optim.lr and start again"
            )
            raise NonFiniteLossError(
                f"{method} training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped: {kept}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = len(y)
        seen += n
        for key, value in {"loss": loss.detach(), **result.terms}.items():
            sums[key] = sums.get(key, 0.0) + value.detach().double().cpu() * n
        correct += (result.logits.detach().argmax(1) == y).sum().cpu()
        if hasattr(bar, "set_postfix") and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    elapsed = time.perf_counter() - start
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


def load_run_config(out: Union[str, Path]) -> TrainConfig:
    """The resolved config of the run in folder ``out``."""
    path = Path(out) / CONFIG_FILE
    return load_config(path)


__all__ = [
    "NonFiniteLossError",
    "build_datasets",
    "build_optimizer",
    "default_config_path",
    "evaluate",
    "load_run_config",
    "lr_factor",
    "resolve_train_config",
    "train",
]
