"""Safe checkpoint I/O: safetensors weights + JSON sidecar; training state via weights-only torch.load."""
from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping

import torch

from wsol.errors import CheckpointError
from wsol.utils.io import atomic_path, atomic_write_json

FORMAT = "wsol-checkpoint-v1"


def sidecar_path(weights: Path) -> Path:
    """The JSON metadata file that accompanies a ``.safetensors`` weights file."""
    return weights.with_suffix(".json")


def save_weights(path: Path, state: Mapping[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` (.safetensors) and ``meta`` to its JSON sidecar, both atomically.

    The sidecar is written last, so a checkpoint whose sidecar exists is complete.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(sidecar_path(path), {"format": FORMAT, **meta})
    return path


def read_sidecar(path: Path) -> Dict[str, Any] | None:
    """The metadata of a wsol checkpoint, or None when ``path`` has no wsol sidecar.

    ``path`` names the weights; a JSON file there (the sidecar itself, or predictions picked by tab
    completion) is refused with the weights file to pass instead, not read as weights.
    """
    path = Path(path)
    if path.suffix == ".json":
        weights = path.with_suffix(".safetensors")
        hint = f"pass the weights file beside it, {weights}" if weights.is_file() else "pass a weights file"
        raise CheckpointError(f"{path} is a JSON file, not model weights; {hint}")
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint metadata {side} is not valid JSON ({err.msg})") from None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def load_state_file(path: Path) -> Dict[str, torch.Tensor]:
    """Load a state dict from .safetensors or a .pt/.pth/.bin file without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read safetensors file {path}: {err}") from None
    return _unwrap_state_dict(read_torch_file(path), path)


def read_torch_file(path: Path) -> Any:
    """What a .pt/.pth/.bin file holds, read with ``torch.load(weights_only=True)``: a file that needs code to
    unpickle (a whole model saved with ``torch.save(model)``) and an unreadable or truncated file are one-line errors."""
    try:
        with warnings.catch_warnings():  # torch warns on stderr about a plain pickle's protocol before it fails or loads
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        _refuse_other_formats(path)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        raise CheckpointError(
            f"refusing to load {path}: it needs code to unpickle ({found.group(1) + ': ' if found else ''}a whole model saved with "
            "torch.save(model)?); save model.state_dict() or safetensors instead"
        ) from None
    except Exception as err:  # zip, EOF and IO errors all mean the same thing to the user
        _refuse_other_formats(path)  # a text file fails here too, with an unpickler KeyError such as "105"
        raise CheckpointError(f"cannot read checkpoint {path} ({_first_line(err)})") from None


def _refuse_other_formats(path: Path) -> None:
    """Name a file torch.load failed on that is neither torch's zip nor a pickle (JSON, text, an image ...) as such,
    rather than by the unpickler's message about its first byte."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head and not head.startswith((b"PK", b"\x80")):
        raise CheckpointError(f"cannot read checkpoint {path}: it is not a PyTorch weights file (.pt/.pth)") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or ["unreadable or empty"])[0]


def _unwrap_state_dict(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    """Accept a bare state dict or the common {'state_dict': ...} / {'model': ...} wrappers."""
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def save_train_state(path: Path, state: Dict[str, Any]) -> None:
    """Save optimizer/scheduler/epoch/RNG state for resuming (tensors and plain containers only)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: Path) -> Dict[str, Any]:
    """Load what :func:`save_train_state` wrote, refusing anything that needs code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refusing to load {path}: it needs code to unpickle") from err


def check_keys(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise a CheckpointError naming missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{path} does not fit this architecture; " + "; ".join(parts))
