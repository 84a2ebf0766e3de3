"""Progress bars that stay quiet where nobody watches (non-rank-0, CI, non-TTY when asked)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: Optional[int] = None, enabled: bool = True) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr; disabled off rank 0 or when WSOL_PROGRESS=0."""
    from wsol.utils.distributed import is_main_process

    show = enabled and is_main_process() and os.environ.get("WSOL_PROGRESS", "1") != "0"
    return iter(tqdm(iterable, desc=desc, total=total, disable=not show, file=sys.stderr, leave=False, dynamic_ncols=True))
