"""JSON-lines results files survive a torn last line; atomic JSON writes."""
from __future__ import annotations

import json

from wsol.utils.io import append_jsonl, atomic_write_json, read_jsonl


def test_jsonl_append_and_torn_tail(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2})
    with open(path, "a") as fh:
        fh.write('{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert read_jsonl(tmp_path / "none.jsonl") == []


def test_atomic_json(tmp_path) -> None:
    atomic_write_json(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": [1, 2]}
