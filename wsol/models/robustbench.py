"""Robust models by name, loaded from local files only: RobustBench CIFAR-10 models, pyautoattack's ResNet-18, wsol checkpoints.

``load_robust_model(name, weights, device)`` builds the architecture and loads the user's files strictly
(``torch.load(weights_only=True)``; leading ``module.`` / ``model.`` prefixes are stripped). Nothing is
ever downloaded: a missing file is a one-line error that says where the checkpoint comes from.
Every model maps [0, 1] images to logits and is returned in eval mode.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, Union

import torch
import torch.nn as nn

from wsol.errors import CheckpointError
from wsol.models.build import load_model
from wsol.models.checkpoint import check_keys, read_sidecar, read_torch_file
from wsol.models.cifar_resnet import cifar_resnet18
from wsol.models.dm_wrn import dm_wide_resnet, ra_wide_resnet_70_16
from wsol.models.mixing import MixedClassifier, bai2023_edm
from wsol.registry import Registry

ROBUSTBENCH_URL = "https://github.com/RobustBench/robustbench"
WSOL_CHECKPOINT = "wsol-checkpoint"
PYAUTOATTACK_RESNET18 = "pyautoattack-resnet18"

Weights = Union[str, Path, Sequence[Union[str, Path]], None]


@dataclass(frozen=True)
class RobustModelSpec:
    """How to build one named model and where its weight files come from."""

    build: Callable[[], nn.Module]
    files: Tuple[str, ...]
    source: str
    description: str


ROBUST_MODELS: Registry = Registry("robust model")


def _register(name: str, spec: RobustModelSpec) -> None:
    ROBUST_MODELS.register(name)(lambda: spec)


def _zoo(gdrive_ids: Sequence[str]) -> str:
    ids = ", ".join(gdrive_ids)
    return f"the RobustBench CIFAR-10 Linf model zoo (Google Drive id {ids}; see {ROBUSTBENCH_URL})"


for _name, _build, _ids, _desc in (
    ("Peng2023Robust", ra_wide_resnet_70_16, ("1-6M8KHZdPmgqYkBSkdZQ2fLwp86ZQ9VU",), "RaWideResNet-70-16 (SiLU, squeeze-excitation)"),
    ("Wang2023Better_WRN-70-16", lambda: dm_wide_resnet(70, 16), ("1-RF7ZSS-PAh6bfQcuqx4lh9bc9BUGnap",), "WideResNet-70-16 (SiLU)"),
    ("Wang2023Better_WRN-28-10", lambda: dm_wide_resnet(28, 10), ("1-6MYKJdECDVGaWjj6GgqvaT95BGKhUvI",), "WideResNet-28-10 (SiLU)"),
    ("Cui2023Decoupled_WRN-28-10", lambda: dm_wide_resnet(28, 10), ("1-AaTrYt23WJFR22hXgBd-i6kjpsz6Hf2",), "WideResNet-28-10 (SiLU)"),
):
    _register(_name, RobustModelSpec(_build, (f"{_name}.pt",), _zoo(_ids), _desc))

_BAI_IDS = ("1-5EwY_5tQZudo9idwXiUGr3P4OUUGaQN", "1-RF7ZSS-PAh6bfQcuqx4lh9bc9BUGnap", "1-7oV7QDgz8McvhbaCj6Owx3Rz3daiPrT")
_register(
    "Bai2023Improving_edm",
    RobustModelSpec(
        bai2023_edm,
        tuple(f"Bai2023Improving_edm.pt_m{i}.pt" for i in range(3)),
        _zoo(_BAI_IDS),
        ("ResNet-152 (BiT) + WideResNet-70-16 (SiLU) + mixing network; 3 files: standard, robust, mixing "
         "(the robust one is the same Drive file as Wang2023Better_WRN-70-16.pt)"),
    ),
)
_register(
    PYAUTOATTACK_RESNET18,
    RobustModelSpec(
        cifar_resnet18,
        ("model_test.pt",),
        "the pyautoattack package (pip install pyautoattack; examples/model_test.pt)",
        "CIFAR-10 ResNet-18 shipped with pyautoattack, no normalization inside",
    ),
)


def robust_model_names() -> List[str]:
    """The names :func:`load_robust_model` accepts (``wsol-checkpoint`` loads a wsol checkpoint file)."""
    return sorted([*ROBUST_MODELS.names(), WSOL_CHECKPOINT])


def describe_robust_model(name: str) -> str:
    """One line: the architecture and where its weight files come from."""
    if name == WSOL_CHECKPOINT:
        return "a checkpoint written by wsol (safetensors + JSON sidecar); --checkpoint FILE is the short form"
    spec = ROBUST_MODELS.get(name)()
    return f"{spec.description}; weights from {spec.source}"


def pyautoattack_resnet18_path() -> Path:
    """The ResNet-18 weights inside the installed ``pyautoattack`` package."""
    found = importlib.util.find_spec("pyautoattack")
    if found is None or found.origin is None:
        raise CheckpointError("pyautoattack is not installed; run `pip install pyautoattack` to get its ResNet-18 weights")
    return Path(found.origin).parent / "examples" / "model_test.pt"


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Sequence[str] = ("module.", "model.")) -> Dict[str, torch.Tensor]:
    """Drop each of ``prefixes`` (in order) from the start of the keys that carry it (DataParallel / wrapper names)."""
    out = dict(state)
    for prefix in prefixes:
        out = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in out.items()}
    return out


def _read_state(path: Path) -> Dict[str, object]:
    obj = read_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return obj


def _load_strict(module: nn.Module, state: Mapping[str, object], path: Path) -> None:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        raise CheckpointError(f"{path} holds entries that are not tensors; expected a plain state dict")
    check_keys(module.state_dict(), tensors, path)
    module.load_state_dict(tensors, strict=True)


def _weight_paths(name: str, spec: RobustModelSpec, weights: Weights) -> List[Path]:
    if weights is None and name == PYAUTOATTACK_RESNET18:
        weights = pyautoattack_resnet18_path()
    if weights is None:
        raise CheckpointError(f"{name} needs its weight file(s) {', '.join(spec.files)}; get them from {spec.source}")
    paths = [Path(weights)] if isinstance(weights, (str, Path)) else [Path(p) for p in weights]
    if len(paths) != len(spec.files):
        raise CheckpointError(f"{name} needs {len(spec.files)} weight file(s) ({', '.join(spec.files)}), got {len(paths)}")
    for path, file in zip(paths, spec.files):
        if path.is_dir():
            raise CheckpointError(f"weights file for {name}: {path} is a folder; pass the file in it, e.g. {path / file}")
        if not path.is_file():
            raise CheckpointError(f"weights file for {name} not found: {path}; get it from {spec.source}")
        if path.suffix == ".safetensors" and read_sidecar(path) is not None:  # a model wsol trained: the key check lists its layers
            raise CheckpointError(f"weights file for {name}: {path} is a wsol checkpoint, not {name}'s weights; pass it as --checkpoint {path} "
                                  f"(in a study file: checkpoint: {path})")
    return paths


def _load_mixture(model: MixedClassifier, paths: Sequence[Path]) -> None:
    std_path, rob_path, mix_path = paths
    _load_strict(model.std_model, strip_prefixes(_read_state(std_path), ("module.",)), std_path)
    _load_strict(model.rob_model, strip_prefixes(_read_state(rob_path), ("module.",)), rob_path)
    mixing = strip_prefixes(_read_state(mix_path), ("module.",))
    if not isinstance(mixing.get("model"), dict) or not isinstance(mixing.get("bn"), dict):
        raise CheckpointError(f"{mix_path} is not a mixing-network file (expected the keys 'model' and 'bn')")
    _load_strict(model.policy_net, mixing["model"], mix_path)
    _load_strict(model.bn, mixing["bn"], mix_path)


def load_robust_model(name: str, weights: Weights = None, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Build model ``name`` and load its local weight file(s) strictly; returns it in eval mode on ``device``.

    ``weights``: one path, or for ``Bai2023Improving_edm`` three (standard, robust, mixing) in that order.
    It may be omitted only for ``pyautoattack-resnet18``, whose file ships with the installed package.
    """
    if name == WSOL_CHECKPOINT:
        if weights is None or not isinstance(weights, (str, Path)):
            raise CheckpointError("wsol-checkpoint needs exactly one checkpoint path (.safetensors with its JSON sidecar)")
        model: nn.Module = load_model(Path(weights))
    else:
        spec = ROBUST_MODELS.get(name)()
        paths = _weight_paths(name, spec, weights)
        model = spec.build()
        if isinstance(model, MixedClassifier):
            _load_mixture(model, paths)
        else:
            _load_strict(model, strip_prefixes(_read_state(paths[0])), paths[0])
    return model.to(device).eval()
