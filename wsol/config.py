"""Typed, validated run configurations: YAML files + overrides → frozen dataclasses.

Unknown keys and bad values raise :class:`ConfigError` naming the dotted key. Epsilons and step
sizes accept fractions such as ``8/255`` as well as decimals.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import yaml

from wsol.errors import ConfigError

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def parse_number(value: Any, key: str = "value") -> float:
    """A finite float from a number or a string like ``'8/255'`` or ``'0.0314'``; NaN and ±inf are refused."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    number: Optional[float] = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        try:
            if match:
                den = float(match.group(2))
                if den == 0:
                    raise ConfigError(f"{key}: division by zero in {value!r}")
                number = float(match.group(1)) / den
            else:
                number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{key}: expected a number such as 0.03 or 8/255, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class OptimConfig:
    """SGD settings."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    head_lr_mult: float = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: constant, step (every ``step_size`` epochs) or multistep."""

    kind: str = "multistep"
    milestones: Tuple[int, ...] = ()
    gammas: Tuple[float, ...] = ()
    step_size: int = 0
    gamma: float = 0.1


@dataclass(frozen=True)
class AttackConfig:
    """An ℓ∞ PGD-style perturbation: radius, step size, number of steps."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    random_start: bool = True


@dataclass(frozen=True)
class ArtConfig:
    """ART (Algorithm 1) settings; the official-code switches are off by default (paper behaviour)."""

    lam: float = 0.5
    beta: float = 50.0
    eps: float = 8 / 255
    step_size: float = 1.5 / 255
    steps: int = 3
    topk: Optional[int] = None
    normalized_cosine: bool = False
    clean_and_adv: bool = False
    channel_mean: bool = False
    batched: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """What the training loop evaluates, and how often."""

    every: int = 1
    pgd_steps: int = 0
    pgd_eps: float = 8 / 255
    pgd_step_size: float = 2 / 255
    max_batches: Optional[int] = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; written resolved to ``<out>/config.yaml``."""

    dataset: str = "shapes"
    root: Optional[str] = None
    arch: str = "small-cnn"
    method: str = "natural"
    weights: Optional[str] = None
    epochs: int = 1
    warmup_epochs: int = 0
    warm_start: Optional[str] = None
    batch_size: int = 64
    eval_batch_size: int = 128
    transform: str = "none"
    image_size: Optional[int] = None
    workers: int = 0
    seed: int = 0
    max_train_batches: Optional[int] = None
    sync_bn: bool = False
    amp: bool = True
    channels_last: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    pgd: AttackConfig = field(default_factory=AttackConfig)
    art: ArtConfig = field(default_factory=ArtConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_POSITIVE = {
    "epochs", "batch_size", "eval_batch_size", "optim.lr", "art.beta", "pgd.steps", "eval.every",
    "schedule.gamma", "art.steps",
}
_NON_NEGATIVE = {
    "workers", "warmup_epochs", "optim.momentum", "optim.weight_decay", "art.lam", "art.eps", "art.step_size", "pgd.eps",
    "pgd.step_size", "eval.pgd_steps", "eval.pgd_eps", "eval.pgd_step_size", "optim.head_lr_mult",
}
def _model_names() -> List[str]:
    from wsol.models.build import MODELS

    return MODELS.names()


def _dataset_names() -> List[str]:
    from wsol.data.registry import load_all

    return load_all().names()


#: Keys whose value must name a registered entry (looked up lazily: the registries import torch).
_REGISTERED = {"arch": _model_names, "dataset": _dataset_names}
_CHOICES = {
    "method": ("natural", "pgd", "art", "art-pgd"),
    "schedule.kind": ("constant", "step", "multistep"),
    "transform": ("none", "cub", "cifar", "balance"),
}


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (tuple, list, Tuple, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if tp is float:
        return parse_number(value, key)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    values = {}
    for name, value in data.items():
        key = prefix + name
        values[name] = _convert(value, hints[name], key)
        _check_range(key, values[name])
    return cls(**values)


def _check_range(key: str, value: Any) -> None:
    if key in _POSITIVE and value is not None and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")
    if key in _NON_NEGATIVE and value is not None and value < 0:
        raise ConfigError(f"{key} must not be negative, got {value}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{key} must be one of {', '.join(_CHOICES[key])}; got {value!r}")
    if key in _REGISTERED:
        names = _REGISTERED[key]()
        if value not in names:
            raise ConfigError(f"{key}: unknown name {value!r}; choose one of: {', '.join(names)}")
    leaf = key.rsplit(".", 1)[-1]
    if (leaf == "eps" or leaf.endswith("_eps")) and value is not None and value > 1:
        raise ConfigError(f"{key} is in pixel units of [0, 1] images and must be ≤ 1 (e.g. 8/255), got {value}")


def _set_dotted(tree: Dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> Tuple[str, Any]:
    """Parse one ``key.sub=value`` override; the value is read as YAML (numbers, lists, 8/255 strings)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. art.lam=0.5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Load a YAML config (or the defaults), apply dotted-key ``overrides``, validate and return it."""
    tree: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of settings at the top level")
        tree = loaded
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    return _check_warmup(_build(TrainConfig, tree))


def _check_warmup(config: TrainConfig) -> TrainConfig:
    """Cross-key checks of the warm-up: it must leave epochs for the method, and ``warm_start`` (a
    model standing in for the warm-up) needs a warm-up to replace and excludes ``weights``."""
    if config.warmup_epochs and config.warmup_epochs >= config.epochs:
        raise ConfigError(
            f"warmup_epochs ({config.warmup_epochs}) must be below epochs ({config.epochs}): the warm-up is "
            f"followed by {config.method} epochs"
        )
    if config.warm_start is not None and not config.warmup_epochs:
        raise ConfigError("warm_start replaces the warm-up epochs, but warmup_epochs is 0")
    if config.warm_start is not None and config.weights is not None:
        raise ConfigError("pass either weights (initial weights, then the warm-up) or warm_start (skips the warm-up), not both")
    return config


def config_to_dict(config: Any) -> Dict[str, Any]:
    """A plain dict (lists, not tuples) suitable for YAML or JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def config_to_yaml(config: Any) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
