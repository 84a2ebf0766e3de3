"""JSON-lines results files survive a torn last line; atomic writes respect the umask and clean up;
one writer per run folder; output paths are checked before any work."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from wsol.errors import WsolError
from wsol.utils.io import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_writable_output,
    read_jsonl,
    run_folder_lock,
)


def test_jsonl_append_and_torn_tail(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2})
    with open(path, "a") as fh:
        fh.write('{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert read_jsonl(tmp_path / "none.jsonl") == []
    append_jsonl(path, {"epoch": 3})  # the torn fragment is cut, the new record gets its own line
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"a": ')
    append_jsonl(torn, {"a": 1})
    assert torn.read_text() == '{"a": 1}\n'


def test_atomic_json(tmp_path) -> None:
    atomic_write_json(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": [1, 2]}


def _strict(text: str):
    """JSON as strict parsers (JSON.parse, jq) read it: the tokens NaN and Infinity are not JSON."""
    def reject(token: str):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=reject)


def test_an_undefined_number_is_written_as_null_in_every_json_file(tmp_path) -> None:
    record = {"mean": float("nan"), "ci": [float("-inf"), 1.5], "nested": ({"p": float("inf")},), "n": 0, "ok": 2.0}
    expected = {"mean": None, "ci": [None, 1.5], "nested": [{"p": None}], "n": 0, "ok": 2.0}
    atomic_write_json(tmp_path / "summary.json", record)
    append_jsonl(tmp_path / "rows.jsonl", record)
    assert _strict((tmp_path / "summary.json").read_text()) == expected
    assert [_strict(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()] == [expected]
    assert record["mean"] != record["mean"]  # the caller's object is left as it was


def test_atomic_write_respects_umask(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new" / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o750


def test_stale_temp_files_of_the_same_output_are_removed(tmp_path) -> None:
    stale = tmp_path / ".out.json.abc123.tmp"
    stale.write_text("half")
    other = tmp_path / ".other.json.abc123.tmp"
    other.write_text("half")
    atomic_write_json(tmp_path / "out.json", {"a": 1})
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "out.json"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_run_folder_lock_refuses_a_second_writer(tmp_path) -> None:
    run = tmp_path / "run"
    with run_folder_lock(run):
        with pytest.raises(WsolError, match=rf"another wsol job is writing to .*run \(pid {os.getpid()}\); wait for it or choose another --out"):
            with run_folder_lock(run):
                pass
    with run_folder_lock(run):
        assert (run / ".lock").exists()


def test_run_folder_lock_is_released_by_kill_9(tmp_path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from wsol.utils.io import run_folder_lock\n"
         "with run_folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WsolError, match=f"pid {holder.pid}"):
            with run_folder_lock(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_folder_lock(run):
        pass


@pytest.mark.parametrize(
    "make, name, kind, message",
    [
        (lambda d: (d / "x").mkdir(), "x", "file", "is an existing folder"),
        (lambda d: (d / "x").write_text(""), "x", "folder", "is an existing file"),
        (lambda d: (d / "x").write_text(""), "x/y.json", "file", "is a file, not a folder"),
        (lambda d: (d / "x").write_text(""), "x/sub/run", "folder", "is a file, not a folder"),
    ],
)
def test_check_writable_output_refuses_bad_paths(tmp_path, make, name, kind, message) -> None:
    make(tmp_path)
    with pytest.raises(WsolError, match=message):
        check_writable_output(tmp_path / name, kind)


def test_check_writable_output_accepts_new_and_existing_targets(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "p.json").write_text("{}")
    for name, kind in (("run", "folder"), ("new/deep/run", "folder"), ("p.json", "file"), ("new/p.json", "file")):
        assert check_writable_output(tmp_path / name, kind) == tmp_path / name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "run"]


def test_check_writable_output_refuses_a_read_only_folder(tmp_path, monkeypatch) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(WsolError, match="read-only"):
        check_writable_output(tmp_path / "out.json", "file")


def test_read_yaml_refuses_a_key_given_twice_and_keeps_merge_overrides(tmp_path) -> None:
    """Plain YAML keeps the last of two equal keys: a study file with `models:` twice silently lost its first list."""
    from wsol.errors import ConfigError
    from wsol.utils.io import read_yaml

    twice = tmp_path / "twice.yaml"
    twice.write_text("models:\n  - name: a\nmodels:\n  - name: b\n")
    with pytest.raises(ConfigError, match=r"study file .*twice.yaml is not valid YAML: the key 'models' of line 1 is given again at line 3, column 1"):
        read_yaml(twice, "study file")
    flow = tmp_path / "flow.yaml"
    flow.write_text("- {name: a, name: b}\n")
    with pytest.raises(ConfigError, match="the key 'name' of line 1 is given again"):
        read_yaml(flow, "study file")
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  x: 3\n")
    assert read_yaml(merged, "config") == {"base": {"x": 1, "y": 2}, "run": {"x": 3, "y": 2}}
