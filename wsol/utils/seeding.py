"""Reproducible randomness from one integer seed."""
from __future__ import annotations

import random
from typing import Optional, Sequence, Union

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict:
    """Torch CPU (and CUDA) RNG state plus Python's, for bit-exact resume (tensors only)."""
    state = {"torch": torch.get_rng_state(), "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if "python" in state:
        words = tuple(int(v) for v in state["python"].tolist())
        random.setstate((3, words, None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def draw(
    shape: Sequence[int],
    generator: Union[torch.Generator, Sequence[torch.Generator], None],
    device: Union[torch.device, str, None] = None,
    dtype: torch.dtype = torch.float32,
    normal: bool = False,
) -> torch.Tensor:
    """U[0, 1) (or N(0, 1) when ``normal``) draws of ``shape``, made on the generator's device and moved
    to ``device``. A sequence of generators, one per row (``shape[0]`` of them), draws each row from its
    own generator, so a sample's draws do not depend on the batch it is in; None uses the global RNG."""
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
        if not generator:
            return torch.empty(tuple(shape), device=device, dtype=dtype)
        return torch.stack([draw(tuple(shape[1:]), g, device, dtype, normal) for g in generator])
    source: Optional[Union[torch.device, str]] = generator.device if generator is not None else device
    values = (torch.randn if normal else torch.rand)(tuple(shape), generator=generator, device=source, dtype=dtype)
    return values.to(device) if device is not None else values
