"""The dataset registry: ``build_dataset(name, root, split, transform)``."""
from __future__ import annotations

import importlib
import inspect
import shlex
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from torch.utils.data import Dataset

from wsol.data.base import Transform
from wsol.errors import ConfigError, DataError, DataFileMissingError, did_you_mean
from wsol.registry import Registry

DATASETS: Registry = Registry("dataset")
# Datasets that can supply their own root when none is given (name → function returning it).
DEFAULT_ROOTS: Dict[str, Callable[[], Path]] = {}

_LOADER_MODULES = ("shapes", "cub", "wsolmeta", "coco", "flowers", "cifar", "svhn", "gtsrb")


def load_all() -> Registry:
    """Import every loader module so its names are registered; returns the registry."""
    for module in _LOADER_MODULES:
        importlib.import_module(f"wsol.data.{module}")
    return DATASETS


def default_root(name: str) -> Optional[Path]:
    """The root a dataset supplies when none is given (e.g. the generated shapes cache), or None; an unknown
    name is refused here, so a typo (``shape``) is not told to pass a --root it cannot use."""
    load_all().get(name)
    make = DEFAULT_ROOTS.get(name)
    return make() if make is not None else None


def build_dataset(
    name: str,
    root: Union[str, Path],
    split: str = "train",
    transform: Optional[Transform] = None,
    **options: Any,
) -> Dataset:
    """Build the dataset ``name`` from the tree at ``root`` for ``split`` ('train', 'test', ...)."""
    factory = load_all().get(name)
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset root not found: {root}; {where_to_get(name, root)}")
    if not root.is_dir():
        raise DataError(
            f"dataset root {root} is a file, not a folder; pass the folder that holds the dataset, e.g. {root.parent}"
        )
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    if not takes_any:  # a loader with **options checks them itself, against the function it passes them to
        check_options(factory, options, name)
    try:
        return factory(root=root, split=split, transform=transform, **options)
    except DataFileMissingError as err:
        raise DataFileMissingError(f"{err}; {where_to_get(name, root)}") from None


def where_to_get(name: str, root: Union[str, Path]) -> str:
    """Where a user gets dataset ``name`` (wsol downloads nothing): generated for shapes, else datasets/README.md."""
    if name == "shapes":
        return f"generate it with `wsol data synth shapes --out {shlex.quote(str(root))}`"  # a command to paste, spaces and all
    return (f"wsol downloads nothing: fetch {name} as the '{name}' section of datasets/README.md says "
            "and pass its folder")


_NOT_OPTIONS = ("root", "split", "transform")


def check_options(loader: Callable[..., Any], options: Dict[str, Any], dataset: str) -> None:
    """Raise a ConfigError naming the first option ``loader`` does not take, or one whose value has the wrong
    type for its annotation (``-o native_size=abc``), instead of a TypeError deep in the loader."""
    params = [n for n, p in inspect.signature(loader).parameters.items()
              if n not in _NOT_OPTIONS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(f"dataset {dataset!r} has no option {unknown[0]!r}; it takes: {', '.join(params)}{did_you_mean(unknown[0], params)}")
    hints = typing.get_type_hints(loader)
    for key, value in options.items():
        expected = _option_type_name(hints.get(key), value)
        if expected is not None:
            raise ConfigError(f"dataset {dataset!r} option {key}={value!r}: expected {expected}")


def _option_type_name(hint: Any, value: Any) -> Optional[str]:
    """What ``value`` should have been for annotation ``hint`` (None when it fits, or for paths and strings)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Union:
        if value is None:
            return None
        return _option_type_name(args[0], value) if len(args) == 1 else None
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if typing.get_origin(hint) is tuple:
        fits = isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value)
        count = "numbers" if Ellipsis in args else f"{len(args)} numbers"
        return None if fits else f"{count} (set it from Python)"
    return None
