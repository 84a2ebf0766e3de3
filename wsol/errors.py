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
    names = {str(c).lower(): str(c) for c in choices}  # compared without case, named as spelled
    text = str(value).lower()
    close = [text] if text in names else difflib.get_close_matches(text, list(names), n=1, cutoff=0.75)
    return f"; did you mean {names[close[0]]!r}?" if close else ""


def option_flag(key: str) -> str:
    """The command-line option of a settings key, for messages: ``n_iter`` → ``--n-iter``."""
    return f"--{key.replace('_', '-')}"
