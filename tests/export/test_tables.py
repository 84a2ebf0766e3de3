"""Intervals in tables: Markdown shows ``[low, high]``, CSV two numeric columns at full precision."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from wsol.export.tables import UNDEFINED_INTERVAL, Interval, csv_text, markdown_table

ROWS = [{"model": "a", "accuracy": 0.1, "95% CI": Interval(0.027866481213768224, 0.3010336452284873)},
        {"model": "b", "accuracy": float("nan"), "95% CI": UNDEFINED_INTERVAL},
        {"model": "c", "accuracy": 0.5, "95% CI": None}]


def test_markdown_shows_an_interval_as_low_high_in_the_tables_float_format() -> None:
    lines = markdown_table(ROWS, floatfmt=".4f").splitlines()
    assert lines[2:] == ["| a | 0.1000 | [0.0279, 0.3010] |", "| b | – | – |", "| c | 0.5000 |  |"]
    assert markdown_table(ROWS[:1]).splitlines()[2] == "| a | 0.10 | [0.03, 0.30] |"  # the default .2f
    assert f"{Interval(1.0, 2.5):.1f}" == "[1.0, 2.5]" and f"{UNDEFINED_INTERVAL:.1f}" == "–"


def test_csv_writes_an_interval_as_two_numeric_columns_at_full_precision() -> None:
    """It was the text "[0.028, 0.301]": rounded, to be parsed, and split in two by numpy.genfromtxt at its comma."""
    text = csv_text(ROWS)
    assert text.splitlines() == ["model,accuracy,95% CI low,95% CI high", "a,0.1,0.027866481213768224,0.3010336452284873", "b,,,", "c,0.5,,"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert float(rows[0]["95% CI low"]) == ROWS[0]["95% CI"].low and float(rows[0]["95% CI high"]) == ROWS[0]["95% CI"].high
    table = np.genfromtxt(io.StringIO(text), delimiter=",", names=True, dtype=None, encoding=None)
    assert table.dtype["95_CI_low"] == np.float64 and table.dtype["95_CI_high"] == np.float64
    assert table["95_CI_low"][0] == ROWS[0]["95% CI"].low and math.isnan(table["95_CI_high"][1]) and math.isnan(table["95_CI_low"][2])


def test_csv_intervals_follow_the_given_column_order() -> None:
    assert csv_text(ROWS[:1], ["95% CI", "accuracy", "model"]).splitlines()[0] == "95% CI low,95% CI high,accuracy,model"


def test_an_interval_column_holding_another_value_is_a_bug_not_a_cell() -> None:
    with pytest.raises(ValueError, match="holds intervals"):
        csv_text([ROWS[0], {"model": "d", "95% CI": "[0.1, 0.2]"}])


def test_an_interval_comes_from_bounds_that_may_be_undefined() -> None:
    assert Interval.between(1, 2) == (1.0, 2.0) and Interval.between(1, 2).defined
    assert not Interval.between(None, 2.0).defined and math.isnan(Interval.between(None, 2.0).low)
