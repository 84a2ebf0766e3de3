"""The architecture registry and the one way to build, save and load a Classifier."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch.nn as nn

from wsol.errors import CheckpointError
from wsol.models.activations import make_switchable
from wsol.models.checkpoint import check_keys, load_state_file, read_sidecar, save_weights
from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD
from wsol.models.classifier import Classifier
from wsol.models.vgg_gap import VGG16GAP, SmallCNN
from wsol.models.wrn import PreActResNet18, WideResNet
from wsol.registry import Registry


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and how ImageNet checkpoints map onto it."""

    factory: Callable[[int], nn.Module]
    feature_layer: str
    input_size: int
    head_prefixes: Tuple[str, ...]
    new_prefixes: Tuple[str, ...] = ()
    ignored_prefixes: Tuple[str, ...] = ()
    description: str = ""


MODELS: Registry = Registry("architecture")


def _register(name: str, spec: ArchSpec) -> None:
    MODELS.register(name)(lambda: spec)


def _timm_resnet50(num_classes: int) -> nn.Module:
    import timm

    return timm.create_model("resnet50", pretrained=False, num_classes=num_classes)


_register("resnet50", ArchSpec(_timm_resnet50, "layer4", 224, ("fc.",), description="timm ResNet-50 (ImageNet layout)"))
_register(
    "vgg16-gap",
    ArchSpec(
        VGG16GAP,
        "extra",
        224,
        ("fc.",),
        new_prefixes=("extra.",),
        ignored_prefixes=("classifier.", "pre_logits.", "head."),
        description="VGG16 trunk without last pool + 3×3 conv 1024 + GAP (CAM/ADL)",
    ),
)
for _depth, _width in ((28, 10), (40, 2), (34, 10), (70, 16), (16, 2), (16, 4)):
    _register(
        f"wrn-{_depth}-{_width}",
        ArchSpec(
            lambda n, d=_depth, w=_width: WideResNet(d, w, n),
            "relu",
            32,
            ("fc.",),
            description=f"CIFAR WideResNet-{_depth}-{_width}",
        ),
    )
_register("preact-resnet18", ArchSpec(PreActResNet18, "relu", 32, ("fc.",), description="PreAct ResNet-18 (CIFAR)"))
_register("small-cnn", ArchSpec(SmallCNN, "features", 64, ("fc.",), description="5-conv CNN without batch norm (tests)"))
_register(
    "small-cnn-bn",
    ArchSpec(lambda n: SmallCNN(n, batch_norm=True), "features", 64, ("fc.",), description="5-conv CNN with batch norm (demo)"),
)


def arch_spec(arch: str) -> ArchSpec:
    """The build recipe for ``arch`` (one-line error for unknown names)."""
    return MODELS.get(arch)()


def build_model(
    arch: str,
    num_classes: int,
    weights: Optional[Union[str, Path]] = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    input_size: Optional[int] = None,
) -> Classifier:
    """Build ``arch`` for ``num_classes`` with normalization inside; optionally load local ``weights``.

    ``weights`` is either a wsol checkpoint (.safetensors with its JSON sidecar: loaded whole) or an
    ImageNet checkpoint of the backbone in timm/torchvision layout (.safetensors/.pth/.pt: the head is
    re-initialized when the class count differs). Nothing is ever fetched from a hub.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    spec = arch_spec(arch)
    net = spec.factory(num_classes)
    model = Classifier(net, arch, num_classes, mean, std, input_size or spec.input_size, spec.feature_layer)
    make_switchable(model)
    if weights is not None:
        path = Path(weights)
        meta = read_sidecar(path)
        if meta is not None:
            _load_wsol_checkpoint(model, path, meta)
        else:
            _load_backbone(model, spec, path)
    return model


def _load_wsol_checkpoint(model: Classifier, path: Path, meta: Dict[str, Any]) -> None:
    if meta.get("arch") != model.arch:
        raise CheckpointError(f"{path} holds a {meta.get('arch')!r} model, not {model.arch!r}")
    state = load_state_file(path)
    expected = model.state_dict()
    check_keys(expected, state, path)
    model.load_state_dict(state)


def _load_backbone(model: Classifier, spec: ArchSpec, path: Path) -> None:
    state = load_state_file(path)
    if any(k.startswith("net.") for k in state):
        check_keys(model.state_dict(), state, path)
        model.load_state_dict(state)
        return
    net_state = model.net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(spec.ignored_prefixes)}
    head_fits = all(k in state and state[k].shape == v.shape for k, v in net_state.items() if k.startswith(spec.head_prefixes))
    fresh = spec.new_prefixes + (() if head_fits else spec.head_prefixes)
    if not head_fits:
        state = {k: v for k, v in state.items() if not k.startswith(spec.head_prefixes)}
    expected = {k: v for k, v in net_state.items() if not k.startswith(fresh)}
    check_keys(expected, state, path)
    model.net.load_state_dict(state, strict=False)


def save_model(model: Classifier, path: Union[str, Path], **meta: Any) -> Path:
    """Save ``model`` as safetensors + JSON sidecar (arch, classes, normalization and ``meta``)."""
    mean, std = model.norm_stats
    info = {
        "arch": model.arch,
        "num_classes": model.num_classes,
        "mean": mean,
        "std": std,
        "input_size": model.input_size,
        **meta,
    }
    return save_weights(Path(path), model.state_dict(), info)


def load_model(path: Union[str, Path]) -> Classifier:
    """Rebuild a Classifier from a wsol checkpoint written by :func:`save_model`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the model file in it, e.g. {path / 'model.safetensors'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_sidecar(path)  # a .json path (the sidecar itself) is refused there, naming the weights beside it
    if meta is None:
        beside = path.parent / "model.safetensors"
        hint = f"; the model of that run is {beside}" if beside.is_file() else "; pass a model file wsol wrote (NAME.safetensors beside NAME.json)"
        raise CheckpointError(f"{path} has no wsol metadata sidecar ({path.with_suffix('.json').name}){hint}")
    model = build_model(meta["arch"], int(meta["num_classes"]), mean=meta["mean"], std=meta["std"], input_size=meta.get("input_size"))
    _load_wsol_checkpoint(model, path, meta)
    return model


def checkpoint_meta(path: Union[str, Path]) -> Dict[str, Any]:
    """The JSON metadata of a wsol checkpoint."""
    meta = read_sidecar(Path(path))
    if meta is None:
        raise CheckpointError(f"{path} is not a wsol checkpoint (no metadata sidecar)")
    return meta
