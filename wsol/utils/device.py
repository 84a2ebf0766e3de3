"""Device selection: CUDA when present, else CPU (or what the user names)."""
from __future__ import annotations

from typing import Optional

import torch

from wsol.errors import WsolError


def select_device(name: Optional[str] = None) -> torch.device:
    """``None``/'auto' → cuda if available else cpu; 'cuda' without a GPU is a user error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WsolError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device
