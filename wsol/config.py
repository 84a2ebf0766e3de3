"""Typed, validated run configurations: YAML files + overrides → frozen dataclasses.

Unknown keys and bad values raise :class:`ConfigError` naming the dotted key. Epsilons and step
sizes accept fractions such as ``8/255`` as well as decimals.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from wsol.errors import ConfigError, check_given_once, did_you_mean, option_flag
from wsol.utils.io import read_yaml
from wsol.utils.numbers import MAX_SEED, parse_number

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
    """One perturbation search: radius and step in pixel units, number of steps, random start, norm.

    The one attack block: PGD training (``pgd``), ART's attack (``art``, which extends it) and the
    training loop's PGD evaluation (``eval.pgd``) all read it.
    """

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    random_start: bool = True
    norm: str = "linf"


@dataclass(frozen=True)
class ArtConfig(AttackConfig):
    """ART (Algorithm 1): its attack block plus the loss settings; the official-code switches are off
    by default (paper behaviour)."""

    step_size: float = 1.5 / 255
    steps: int = 3
    lam: float = 0.5
    beta: float = 50.0
    topk: Optional[int] = None
    normalized_cosine: bool = False
    clean_and_adv: bool = False
    channel_mean: bool = False
    batched: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """What the training loop evaluates, and how often; ``pgd.steps`` = 0 skips the PGD check."""

    every: int = 1
    pgd: AttackConfig = field(default_factory=lambda: AttackConfig(steps=0))
    max_batches: Optional[int] = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; written resolved to ``<out>/config.yaml``."""

    dataset: str = "shapes"
    root: Optional[str] = None
    dataset_options: Dict[str, Any] = field(default_factory=dict)  # loader options (-o KEY=VALUE), e.g. wsolmeta's metadata
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
    "schedule.gamma", "art.steps", "image_size", "max_train_batches", "eval.max_batches", "art.topk",
}
_NON_NEGATIVE = {
    "workers", "warmup_epochs", "optim.momentum", "optim.weight_decay", "art.lam", "optim.head_lr_mult",
    "schedule.step_size",
}
_BELOW_ONE = {"optim.momentum"}
_ATTACK_NON_NEGATIVE = ("step_size", "steps")
NORMS = ("linf", "l2")
METHOD_ATTACKS: Dict[str, Optional[str]] = {"natural": None, "pgd": "pgd", "art": "art", "art-pgd": "art"}
"""The training methods and the attack block each one's training attack reads (None: no attack).

The config schema owns this vocabulary (it has a block per attack); ``wsol.train.methods`` registers
one step function under each name, so training depends on the config and not the reverse."""
TRAINING_NORMS = ("linf",)
"""Norms the training loop's attacks run in (the sign-ascent core is ℓ∞)."""


def _arch_names() -> Sequence[str]:
    from wsol.models.build import MODELS

    return MODELS.names()


def _dataset_names() -> Sequence[str]:
    from wsol.data.registry import load_all

    return load_all().names()


def _transform_names() -> Sequence[str]:
    from wsol.data.transforms import TRANSFORMS

    return TRANSFORMS.names()


_CHOICES: Dict[str, Callable[[], Sequence[str]]] = {
    "method": lambda: tuple(METHOD_ATTACKS),
    "arch": _arch_names,
    "dataset": _dataset_names,
    "transform": _transform_names,
    "schedule.kind": lambda: ("constant", "step", "multistep"),
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
        return build_config(tp, value, key + ".")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of KEY: VALUE, got {value!r}")
        return dict(value)
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


def build_config(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """The dataclass ``cls`` from a mapping of settings: types converted, ranges checked, and every
    mistake a :class:`ConfigError` naming the dotted key (``prefix`` + field)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    values = {}
    for name, value in data.items():
        key = prefix + name
        values[name] = _convert(value, hints[name], key)
        _check_range(key, values[name], issubclass(cls, AttackConfig))
    return cls(**values)


def _is_eps(leaf: str) -> bool:
    """Whether a key holds radii in pixel units: ``eps``, ``pgd_eps``, ``eps_sweep`` ..."""
    return "eps" in leaf.split("_")


def _check_range(key: str, value: Any, in_attack: bool = False) -> None:
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            _check_range(f"{key}[{i}]", item, in_attack)
        return
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
    if value is None or isinstance(value, bool):
        return
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")
    if (key in _NON_NEGATIVE or (in_attack and leaf in _ATTACK_NON_NEGATIVE)) and value < 0:
        raise ConfigError(f"{key} must not be negative, got {value}")
    if key == "seed" and not 0 <= value <= MAX_SEED:
        raise ConfigError(f"seed must lie in 0..{MAX_SEED}, got {value}")
    if key in _BELOW_ONE and value >= 1:
        raise ConfigError(f"{key} must be below 1, got {value}")
    if in_attack and leaf == "norm" and value not in NORMS:
        raise ConfigError(f"{key} must be one of {', '.join(NORMS)}; got {value!r}")
    if key in _CHOICES:
        names = _CHOICES[key]()
        if value not in names:
            raise ConfigError(f"{key} must be one of {', '.join(names)}; got {value!r}{did_you_mean(value, names)}")
    if _is_eps(leaf) and isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {value}")
        if value > 1:
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
    key, _, raw = text.partition("=")
    if not key.strip() or not raw.strip():
        raise ConfigError(f"override {text!r} must look like key=value, e.g. art.lam=0.5")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def attack_config(config: TrainConfig) -> Optional[AttackConfig]:
    """The attack block the method's training attack reads (None for natural training)."""
    block = METHOD_ATTACKS[config.method]
    return None if block is None else getattr(config, block)


def start_eps(config: TrainConfig) -> float:
    """The radius of the method's random start (0 for natural training or without a random start)."""
    attack = attack_config(config)
    return attack.eps if attack is not None and attack.random_start else 0.0


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Load a YAML config (or the defaults), apply dotted-key ``overrides``, validate and return it."""
    return _config_from_tree(_read_config_file(path), overrides)


def _read_config_file(path: Optional[Union[str, Path]]) -> Dict[str, Any]:
    """The settings mapping of a YAML config file (empty without a file), before any validation."""
    if path is None:
        return {}
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; pass a YAML file, e.g. configs/shapes_small-cnn-bn_natural.yaml")
    if not path.is_file():
        shipped = configs_dir() / path.name  # `configs/x.yaml` as README writes it, typed outside the repository
        hint = f"; the shipped config of that name is {shipped}" if shipped.is_file() else ""
        raise ConfigError(f"config file not found: {path}{hint}")
    loaded = read_yaml(path, "config") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of settings at the top level")
    return loaded


def _config_from_tree(tree: Dict[str, Any], overrides: Optional[Mapping[str, Any]]) -> TrainConfig:
    """``tree`` with dotted-key ``overrides`` applied, as a validated TrainConfig."""
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    return _check_norms(_check_warmup(build_config(TrainConfig, tree)))


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


def _check_norms(config: TrainConfig) -> TrainConfig:
    """The training loop's attacks (``pgd``, ``art``, ``eval.pgd``) run in the norms of :data:`TRAINING_NORMS`."""
    for key, block in (("pgd", config.pgd), ("art", config.art), ("eval.pgd", config.eval.pgd)):
        if block.norm not in TRAINING_NORMS:
            raise ConfigError(f"{key}.norm: training attacks run in {', '.join(TRAINING_NORMS)} only, got {block.norm!r}")
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


# ----------------------------------------------------------------------------- shipped configs


# The architecture a dataset trains with when the user names none (CUB: ResNet-50, as in the ART
# paper's Table 2). A dataset missing here takes the one architecture its shipped configs use.
DEFAULT_ARCH: Dict[str, str] = {"cub": "resnet50"}


def configs_dir() -> Path:
    """The repository's ``configs/`` folder (shipped YAML files for every paper setting)."""
    return Path(__file__).resolve().parents[1] / "configs"


def _arch_token(arch: str) -> str:
    return arch.replace("wrn-", "wrn")


def default_config_path(dataset: str, method: str, arch: Optional[str] = None, folder: Optional[Path] = None) -> Optional[Path]:
    """The shipped config ``<dataset>_<arch>_<method>.yaml`` for this setting, or None if none fits.

    Without ``arch`` the dataset's default architecture (:data:`DEFAULT_ARCH`) decides; a dataset
    without one must have exactly one shipped architecture for ``method``.
    """
    folder = folder or configs_dir()
    if not folder.is_dir():
        return None
    if arch is None and dataset in DEFAULT_ARCH:
        arch = DEFAULT_ARCH[dataset]
    if arch is not None:
        path = folder / f"{dataset}_{_arch_token(arch)}_{method}.yaml"
        return path if path.is_file() else None
    matches = [p for p in sorted(folder.glob(f"{dataset}_*_{method}.yaml")) if p.name.count("_") == 2]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise ConfigError(f"several configs fit {dataset}/{method} ({names}); pass --arch or --config")
    return matches[0] if matches else None


def no_shipped_config_note(config: TrainConfig, folder: Optional[Path] = None) -> str:
    """What a run without ``--config`` for which no config is shipped trains with: wsol's built-in defaults, not a recipe
    tuned for the dataset (no augmentation, no learning-rate schedule), and the configs shipped for its dataset."""
    folder = folder or configs_dir()
    shipped = sorted(p.name for p in folder.glob(f"{config.dataset}_*.yaml")) if folder.is_dir() else []
    where = f"configs for {config.dataset}: {', '.join(shipped)}" if shipped else f"no config is shipped for {config.dataset}"
    return (f"no shipped config for {config.dataset} with arch {config.arch} and method {config.method}: training with the built-in "
            f"defaults (`wsol config show` prints them: no augmentation, no learning-rate schedule), not a tuned recipe; {where} "
            f"(start from one with --config and change what differs with --arch/--set)")


def resolve_train_config(
    dataset: str,
    method: Optional[str] = None,
    config_path: Optional[Union[str, Path]] = None,
    arch: Optional[str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> Tuple[TrainConfig, Optional[Path]]:
    """The run config: ``config_path`` (or the shipped ``<dataset>_<arch>_<method>.yaml``, or the
    defaults), then ``overrides`` (dotted keys, as ``--set`` gives them), then ``options`` (dotted
    keys of dedicated flags; None values are skipped, paths become strings), then
    ``dataset``/``method``/``arch``. Returns it with the YAML file used. Without ``method`` the
    config's method is kept (natural for the defaults)."""
    path = Path(config_path) if config_path is not None else default_config_path(dataset, method or "natural", arch)
    tree = _read_config_file(path)
    if tree.get("dataset", dataset) != dataset:
        raise ConfigError(
            f"config {path} is for dataset {tree['dataset']!r}, not {dataset!r}; pass a {dataset} config, "
            f"train {tree['dataset']} with it, or drop its `dataset:` line to reuse its settings"
        )
    merged: Dict[str, Any] = dict(overrides or {})
    if merged.get("dataset", dataset) != dataset:
        raise ConfigError(
            f"--set dataset={merged['dataset']} contradicts the dataset argument {dataset!r}; name the dataset once, as the argument"
        )
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in (options or {}).items() if v is not None}
    _refuse_contradicting_flags(merged, {**flags, "method": method, "arch": arch})
    merged.update(flags)
    merged["dataset"] = dataset
    if method is not None:
        merged["method"] = method
    if arch is not None:
        merged["arch"] = arch
    return _config_from_tree(tree, merged), path


def _refuse_contradicting_flags(overrides: Mapping[str, Any], flags: Mapping[str, Any]) -> None:
    """``--epochs 2 --set epochs=3``: the flag won silently; two values for one key are refused (the same one twice is fine)."""
    for key, value in flags.items():
        if value is None or key not in overrides or str(overrides[key]) == str(value):
            continue
        try:
            if float(overrides[key]) == float(value):
                continue
        except (TypeError, ValueError):
            pass
        flag = "--lr" if key == "optim.lr" else option_flag(key)
        raise ConfigError(f"--set {key}={overrides[key]} contradicts {flag} {value}; give the value once")


def parse_overrides(texts: Optional[List[str]]) -> Dict[str, Any]:
    """``key.sub=value`` texts (``--set``) as one dotted-key mapping. A key given twice with two values
    (``--set epochs=2 --set epochs=3``) is refused rather than one of them silently dropped; the same text twice is fine."""
    overrides: Dict[str, Any] = {}
    given: Dict[str, str] = {}
    for text in texts or []:
        key, value = parse_override(text)
        raw = text.partition("=")[2].strip()
        check_given_once(given, key, raw, "--set", "key")
        overrides[key] = value
    return overrides


# ----------------------------------------------------------------------------- localize


LOCALIZE_TARGETS = ("pred", "gt")


@dataclass(frozen=True)
class LocalizeConfig:
    """How maps are made and turned into boxes and masks.

    target: the class whose map is drawn — 'pred' (the official ART code; what a deployed model
    can do) or 'gt' (the GT-known protocol of wsolevaluation). postprocess: a preset name or a
    tuple of step names (see wsol.localize.heatmap). threshold: fraction of each map's maximum
    that cuts the exported boxes and masks; with ``sweep`` the threshold of the best GT-Known Loc
    over the grid ``arange(0, 1, interval)`` is used instead.
    """

    attribution: str = "grad"
    target: str = "pred"
    postprocess: Any = "wsol"
    threshold: float = 0.2
    sweep: bool = False
    interval: float = 0.01
    masks: bool = False
    batch_size: int = 32
    workers: int = 0
    attribution_options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from wsol.localize.heatmap import PRESETS

        if self.target not in LOCALIZE_TARGETS:
            raise ConfigError(f"localize.target must be one of {', '.join(LOCALIZE_TARGETS)}, got {self.target!r}{did_you_mean(self.target, LOCALIZE_TARGETS)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"--threshold is a fraction of the map maximum in [0, 1) (pixels above it are kept: at 1 none is), "
                              f"got {self.threshold:g}")
        if not 0.0 < self.interval < 1.0:
            raise ConfigError(f"--interval, the step of the threshold grid, must be in (0, 1), got {self.interval:g}")
        if self.batch_size < 1:
            raise ConfigError(f"localize.batch_size must be positive, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"localize.workers must not be negative, got {self.workers}")
        if isinstance(self.postprocess, str) and self.postprocess not in PRESETS:
            raise ConfigError(f"localize.postprocess: unknown preset {self.postprocess!r}; choose one of {', '.join(sorted(PRESETS))}"
                              f"{did_you_mean(self.postprocess, PRESETS)}")

    def metric_thresholds(self) -> np.ndarray:
        """The thresholds the map metrics are computed at: the sweep grid, plus ``threshold`` so
        that its numbers at input resolution exist when it is off the grid."""
        from wsol.localize.levels import default_thresholds

        return np.unique(np.append(default_thresholds(self.interval), self.threshold))
