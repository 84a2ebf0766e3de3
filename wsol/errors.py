"""User-facing errors: the CLI prints them as one line and exits with status 2."""
from __future__ import annotations


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
