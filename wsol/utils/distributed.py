"""torch.distributed helpers that are no-ops in a single process (torchrun sets the env vars)."""
from __future__ import annotations

import os
from typing import Any, List

import torch
import torch.distributed as dist

from wsol.utils.launch import launched_rank, mark_work_started, work_started  # noqa: F401 (re-exported for the jobs)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, or before it exists (the CLI parsing its options under torchrun)
    torchrun's ``RANK`` (0 in one process), so that rank-0-only output is rank 0's from the start."""
    return dist.get_rank() if is_distributed() else launched_rank()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); returns whether it did."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place) and return it; identity in one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` as a list on every rank (a one-element list in one process)."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
