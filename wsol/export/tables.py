"""Result tables: GitHub Markdown for reports and READMEs, CSV (written atomically) for tools."""
from __future__ import annotations

import csv
import io
import math
import numbers
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from wsol.utils.io import atomic_write_text

PathLike = Union[str, Path]


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
    renames columns for display. Floats use ``floatfmt``, NaN shows as "–", a missing value is
    empty, and numeric columns are right-aligned.
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


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None, header: bool = True) -> str:
    """Rows (dicts) as CSV text, with a header line unless ``header`` is False (rows appended to a file that has one).
    ``columns`` orders the keys (default: every key, in first-seen order); cells as :func:`csv_cell` makes them. The
    columns are the file's header: a row with a key outside them raises ValueError (a bug of the caller) rather than
    lose that value from the file unseen; a key a row lacks is an empty cell."""
    cols = _columns(rows, columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    if header:
        writer.writeheader()
    for r in rows:
        extra = [k for k in r if k not in cols]
        if extra:
            raise ValueError(f"a CSV row has keys {extra} outside its columns {cols}")
        writer.writerow({c: csv_cell(r.get(c)) for c in cols})
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


__all__ = ["csv_cell", "csv_text", "markdown_table", "matrix_rows", "write_csv"]
