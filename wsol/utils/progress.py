"""Progress reports that suit where stderr goes: a live bar on a terminal, one line per stage in a log.

``WSOL_PROGRESS`` overrides the choice: ``0`` silences progress, ``1`` forces the live bar even into a
file; unset, a terminal gets the bar and anything else (a log file, a pipe, a batch job) gets one
summary line when each stage (an epoch, a localization pass) ends, never ``\\r`` frames.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, Literal, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

Mode = Literal["off", "bar", "lines"]


def progress_mode() -> Mode:
    """How progress is shown in this process: 'off', 'bar' (live tqdm) or 'lines' (one line per stage)."""
    from wsol.utils.distributed import is_main_process

    setting = os.environ.get("WSOL_PROGRESS", "").strip()
    if setting == "0" or not is_main_process():
        return "off"
    if setting == "1":
        return "bar"
    return "bar" if sys.stderr.isatty() else "lines"


def _lines(iterable: Iterable[T], desc: str, each: bool = False, total: Optional[int] = None) -> Iterator[T]:
    """Pass ``iterable`` through and print one summary line on stderr when it is exhausted (and, with
    ``each``, one line after every item: long jobs such as attacks show they are alive in a log)."""
    start = time.perf_counter()
    count = 0
    for item in iterable:
        count += 1
        yield item
        if each:
            print(f"{desc or 'progress'}: {count}/{total if total is not None else '?'} in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    print(f"{desc or 'done'}: {count} it in {seconds:.1f}s", file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], desc: str = "", total: Optional[int] = None, enabled: bool = True, each: bool = False) -> Iterator[T]:
    """Wrap ``iterable`` in a progress report on stderr (see the module docstring); silent off rank 0.
    ``each``: in a log, also one line per item (for iterables of slow items such as attack batches)."""
    mode = progress_mode() if enabled else "off"
    if mode == "lines":
        return _lines(iterable, desc, each, total if total is not None else getattr(iterable, "__len__", lambda: None)())
    return iter(tqdm(iterable, desc=desc, total=total, disable=mode == "off", file=sys.stderr, leave=False, dynamic_ncols=True))


def step_reporter(desc: str, enabled: bool = True) -> Callable[[str], None]:
    """A callback for the steps inside one slow item (an attack of a ladder, an ε of a sweep, minutes each on a CPU):
    each call prints one line on stderr, ``desc: what (last step 12.3s)``, naming what starts now and how long the
    step before it took, so a user sees the work move between the per-item lines. Above the live bar on a terminal,
    a plain line in a log, nothing when progress is off (``WSOL_PROGRESS=0``, ranks other than 0, ``enabled`` False)."""
    mode = progress_mode() if enabled else "off"
    started: Optional[float] = None  # when the step now running began (None before the first)

    def step(what: str) -> None:
        nonlocal started
        now = time.perf_counter()
        took = "" if started is None else f" (last step {now - started:.1f}s)"
        started = now
        if mode == "lines":
            print(f"{desc}: {what}{took}", file=sys.stderr, flush=True)
        elif mode == "bar":
            tqdm.write(f"{desc}: {what}{took}", file=sys.stderr)

    return step
