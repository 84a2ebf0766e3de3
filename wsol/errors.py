"""User-facing errors: the CLI prints them as one line and exits with status 2."""
from __future__ import annotations

import difflib
from typing import Iterable


class WsolError(Exception):
    """A mistake the user can fix (bad input, missing file, unknown name)."""


class ConfigError(WsolError):
    """A configuration key or value is invalid."""


class DataError(WsolError):
    """A dataset file is missing, malformed or unreadable."""


class DataFileMissingError(DataError):
    """A file a dataset loader needs is not in the root; ``build_dataset`` adds where the data comes from."""


class CheckpointError(WsolError):
    """A checkpoint cannot be loaded (missing, unsafe, wrong architecture)."""


class UnknownNameError(WsolError):
    """A registry lookup for a name that does not exist."""


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """``"; did you mean 'cub'?"`` for a name that is a choice in another case (``CUB``) or a near miss (``natrual``),
    to end an unknown-name error; "" when no choice is close."""
    names = [str(c) for c in choices]
    text = str(value)
    same_case = [n for n in names if n.lower() == text.lower()]
    close = same_case or difflib.get_close_matches(text.lower(), names, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""
