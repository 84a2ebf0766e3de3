"""User-facing errors: the CLI prints them as one line and exits with status 2."""
from __future__ import annotations

import difflib
from typing import Dict, Iterable


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
    swapped = [name for name in names if _one_swap_apart(text, name)]  # `atr`, `cbu`: too short for difflib's ratio
    close = [text] if text in names else swapped or difflib.get_close_matches(text, list(names), n=1, cutoff=0.75)
    return f"; did you mean {names[close[0]]!r}?" if close else ""


def _one_swap_apart(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with two neighbouring letters swapped, the commonest typo of a short name."""
    diff = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else []
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def check_given_once(given: Dict[str, str], key: str, raw: str, what: str, noun: str) -> None:
    """Record that ``key`` was given as ``raw`` (``--set``, ``-o``); the same key again with another value is refused
    (``{what} severity is given twice (severity=3 and severity=5)``) rather than one of the two silently dropped."""
    if key in given and given[key] != raw:
        raise ConfigError(f"{what} {key} is given twice ({key}={given[key]} and {key}={raw}); give each {noun} once")
    given[key] = raw


def option_flag(key: str) -> str:
    """The command-line option of a settings key, for messages: ``n_iter`` → ``--n-iter``."""
    return f"--{key.replace('_', '-')}"
