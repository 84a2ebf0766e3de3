"""What the CLI needs to know about its process before torch is imported: the torchrun rank and whether the job's
work has started. Kept free of torch so that the CLI's error path never imports it: a Ctrl-C in the second that
``import torch`` takes leaves torch half-imported, and importing it again to print the error line crashed."""
from __future__ import annotations

import os

_work_started = False


def mark_work_started(started: bool = True) -> None:
    """Called by a job once its checks pass and its work begins (from then on an error may be one rank's
    own), and with ``False`` by the CLI before each command."""
    global _work_started
    _work_started = started


def work_started() -> bool:
    """Whether this process's job has passed its checks (see :func:`mark_work_started`)."""
    return _work_started


def launched_rank() -> int:
    """This process's rank as torchrun set it (``RANK``), known before the process group exists; 0 alone."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


__all__ = ["launched_rank", "mark_work_started", "work_started"]
