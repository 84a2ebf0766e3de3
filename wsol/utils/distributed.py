"""torch.distributed helpers that are no-ops in a single process (torchrun sets the env vars)."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
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


PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal this process gets when its parent dies."""


def end_with_launcher() -> bool:
    """Ask Linux to send this worker SIGTERM when its launcher dies, so that a torchrun killed with SIGKILL (which
    cannot stop its workers) leaves no worker holding a GPU or a half-done shard; every output is written atomically,
    so the ended worker leaves nothing half-written and a rerun resumes (Linux sends it when the thread that started
    the worker ends: start workers from a thread that outlives them). Returns whether it was set (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    launcher = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != launcher:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); returns whether it did. Each worker
    also ends with its launcher (:func:`end_with_launcher`)."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    end_with_launcher()
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
