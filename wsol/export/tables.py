"""Result tables: GitHub Markdown for reports and READMEs, CSV (written atomically) for tools."""
from __future__ import annotations

import csv
import io
import math
import numbers
from pathlib import Path
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Union

from wsol.utils.io import atomic_write_text

PathLike = Union[str, Path]


class Interval(NamedTuple):
    """A confidence interval as one table value, so every table writes it by one rule: Markdown shows ``[low, high]`` in
    the table's float format, CSV (:func:`csv_text`) two numeric columns ``<name> low`` and ``<name> high`` at full
    precision, which a script reads as numbers (text such as "[0.089, 0.532]" it would have to parse, and a comma
    inside a cell splits it for ``numpy.genfromtxt``). An undefined bound (no sample, one sample) is NaN: "–" in
    Markdown, empty cells in CSV, as every undefined value."""

    low: float
    high: float

    @classmethod
    def between(cls, low: Optional[float], high: Optional[float]) -> "Interval":
        """``[low, high]`` where a bound may be None (a JSON null: undefined), which becomes NaN."""
        return cls(math.nan if low is None else float(low), math.nan if high is None else float(high))

    @property
    def defined(self) -> bool:
        """Whether both bounds are numbers (not NaN or infinite)."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def __format__(self, spec: str) -> str:
        """``[low, high]`` with each bound in ``spec`` (``f"{ci:.2f}"`` → ``[0.09, 0.53]``); "–" when undefined."""
        return f"[{format(self.low, spec)}, {format(self.high, spec)}]" if self.defined else "–"


UNDEFINED_INTERVAL = Interval(math.nan, math.nan)
"""The interval of no sample (or of one, for a t-interval)."""


def _columns(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]]) -> List[str]:
    if columns is not None:
        return list(columns)
    seen: List[str] = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.append(k)
    return seen


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, Interval):
        return format(value, floatfmt)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Optional[Sequence[str]] = None,
    floatfmt: str = ".2f",
    headers: Optional[Mapping[str, str]] = None,
) -> str:
    """Rows (dicts) as a GitHub Markdown table.

    ``columns`` picks and orders the keys (default: every key, in first-seen order). ``headers``
    renames columns for display. Floats use ``floatfmt`` (an :class:`Interval`'s bounds too: ``[low, high]``), NaN shows
    as "–", a missing value is empty, and numeric columns are right-aligned.
    """
    cols = _columns(rows, columns)
    names = [str((headers or {}).get(c, c)) for c in cols]
    numeric = [bool(rows) and all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows if r.get(c) is not None) for c in cols]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c), floatfmt) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: an undefined one (None, NaN) is an empty cell, which ``pandas.read_csv`` and spreadsheets
    read as missing (a spreadsheet takes ``nan`` for text); anything else as it is, floats at full precision."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return ""
    return value


INTERVAL_BOUNDS = ("low", "high")
"""The suffixes of the two CSV columns an :class:`Interval` column ``<name>`` becomes: ``<name> low``, ``<name> high``."""


def _csv_cells(column: str, value: Any, interval: bool) -> dict:
    """The CSV cells of one value: an interval column's two bounds (a missing value: two empty cells), else one cell."""
    if not interval:
        return {column: csv_cell(value)}
    if value is not None and not isinstance(value, Interval):
        raise ValueError(f"column {column!r} holds intervals and a {type(value).__name__} {value!r}")
    bounds = (None, None) if value is None else value
    return {f"{column} {name}": csv_cell(b) for name, b in zip(INTERVAL_BOUNDS, bounds)}


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None, header: bool = True) -> str:
    """Rows (dicts) as CSV text, with a header line unless ``header`` is False (rows appended to a file that has one).
    ``columns`` orders the keys (default: every key, in first-seen order); cells as :func:`csv_cell` makes them, and a
    column of :class:`Interval` values as two numeric columns ``<name> low`` and ``<name> high``: one number a cell, so
    ``csv``, ``pandas`` and ``numpy.genfromtxt`` read them as floats. The columns are the file's header: a row with a key
    outside them raises ValueError (a bug of the caller) rather than lose that value from the file unseen; a key a row
    lacks is an empty cell."""
    cols = _columns(rows, columns)
    intervals = {c for c in cols if any(isinstance(r.get(c), Interval) for r in rows)}
    fields = [name for c in cols for name in ([f"{c} {b}" for b in INTERVAL_BOUNDS] if c in intervals else [c])]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    if header:
        writer.writeheader()
    for r in rows:
        extra = [k for k in r if k not in cols]
        if extra:
            raise ValueError(f"a CSV row has keys {extra} outside its columns {cols}")
        writer.writerow({k: v for c in cols for k, v in _csv_cells(c, r.get(c), c in intervals).items()})
    return buf.getvalue()


def write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> Path:
    """Write rows (dicts) as CSV with a header (:func:`csv_text`), atomically."""
    atomic_write_text(path, csv_text(rows, columns))
    return Path(path)


def matrix_rows(
    matrix: Any, row_labels: Sequence[Any], col_labels: Sequence[Any], corner: str = ""
) -> List[dict]:
    """A 2-D array (tensor, ndarray or nested lists) as rows: ``corner`` holds the row label,
    then one key per column label (e.g. a confusion matrix for :func:`markdown_table`)."""
    values = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    return [{corner: r, **{str(c): v for c, v in zip(col_labels, row)}} for r, row in zip(row_labels, values)]


__all__ = ["INTERVAL_BOUNDS", "UNDEFINED_INTERVAL", "Interval", "csv_cell", "csv_text", "markdown_table", "matrix_rows", "write_csv"]
