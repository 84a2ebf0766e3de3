"""Device selection: CUDA when present, else CPU (or what the user names)."""
from __future__ import annotations

import re
from typing import Optional

import torch

from wsol.errors import WsolError

_DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(name: str) -> torch.device:
    """Check a user-given device name ('cpu', 'cuda', 'cuda:N') against this machine; a WsolError if it cannot be used.

    Called by the CLI while it parses options, so a bad ``--device`` fails before any data or model is touched.
    """
    if not _DEVICE_NAME.fullmatch(name):
        raise WsolError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise WsolError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise WsolError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def select_device(name: Optional[str] = None) -> torch.device:
    """``None``/'auto' → cuda if available else cpu; any other name is checked by :func:`resolve_device`."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)
