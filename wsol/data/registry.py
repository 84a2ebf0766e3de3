"""The dataset registry: ``build_dataset(name, root, split, transform)``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from torch.utils.data import Dataset

from wsol.data.base import Transform
from wsol.errors import DataError, DataFileMissingError
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
    """The root a dataset supplies when none is given (e.g. the generated shapes cache), or None."""
    load_all()
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
    try:
        return factory(root=root, split=split, transform=transform, **options)
    except DataFileMissingError as err:
        raise DataFileMissingError(f"{err}; {where_to_get(name, root)}") from None


def where_to_get(name: str, root: Union[str, Path]) -> str:
    """Where a user gets dataset ``name`` (wsol downloads nothing): generated for shapes, else datasets/README.md."""
    if name == "shapes":
        return f"generate it with `wsol data synth shapes --out {root}`"
    return (f"wsol downloads nothing: fetch {name} as the '{name}' section of datasets/README.md says "
            "and pass its folder")
