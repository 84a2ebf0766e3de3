"""The dataset registry: ``build_dataset(name, root, split, transform)``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from torch.utils.data import Dataset

from wsol.data.base import Transform
from wsol.errors import DataError
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
        raise DataError(f"dataset root not found: {root}")
    return factory(root=root, split=split, transform=transform, **options)
