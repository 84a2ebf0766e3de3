"""Counted nouns in reports: '1 sample', '2 samples' (the demo report said '1 torch threads')."""
from __future__ import annotations

from wsol.jobs.robustness import _sample_count_text
from wsol.utils.numbers import counted


def test_counted_takes_the_noun_in_its_number() -> None:
    assert counted(1, "torch thread") == "1 torch thread" and counted(2, "torch thread") == "2 torch threads"
    assert counted(0, "sample") == "0 samples" and counted(1, "query", "queries") == "1 query" and counted(5000, "query", "queries") == "5000 queries"
    assert _sample_count_text(1) == "1 test sample" and _sample_count_text(500) == "500 test samples"
