"""One writer per run folder: a second process into a folder in use gets a one-line error naming the holder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsol.cli import run
from wsol.errors import WsolError
from wsol.jobs.runfolder import lock_run_folder

REPO = Path(__file__).resolve().parents[2]
HOLD = "import sys; from wsol.utils.io import run_folder_lock\nwith run_folder_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()\n"


@pytest.fixture
def holder(tmp_path):
    """A second process that holds the lock of ``tmp_path / 'run'`` until its stdin closes."""
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.stdin.close()
    proc.wait(30)


def test_second_train_into_a_folder_in_use_is_one_line(holder, capsys) -> None:
    folder, proc = holder
    before = sorted(p.name for p in folder.iterdir())
    assert run(["train", "shapes", "--out", str(folder), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: another wsol job is writing to {folder} (pid {proc.pid}); wait for it or choose another --out\n"
    assert sorted(p.name for p in folder.iterdir()) == before


def test_lock_is_free_once_the_holder_is_killed(holder) -> None:
    folder, proc = holder
    with pytest.raises(WsolError, match=f"pid {proc.pid}"):
        with lock_run_folder(folder):
            pass
    proc.kill()
    proc.wait(30)
    with lock_run_folder(folder) as held:
        assert held == folder


def test_failed_job_leaves_no_folder_it_created(tmp_path) -> None:
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with lock_run_folder(folder):
            raise RuntimeError("validation failed")
    assert not folder.exists()
    nested = tmp_path / "runs" / "cub_resnet50_art"
    with pytest.raises(RuntimeError):
        with lock_run_folder(nested):
            raise RuntimeError("validation failed")
    assert list(tmp_path.iterdir()) == []


def test_train_without_a_root_leaves_no_default_run_folder(tmp_path, monkeypatch, capsys) -> None:
    from wsol.cli import run

    monkeypatch.chdir(tmp_path)
    assert run(["train", "cub", "--method", "art"]) == 2
    assert "needs a root folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_synth_folder_respects_the_umask(tmp_path) -> None:
    from wsol.data.shapes import synthesize_shapes

    old = os.umask(0o027)
    try:
        root = synthesize_shapes(tmp_path / "s", n_train=3, n_test=3, size=32, num_classes=3, seed=0)
    finally:
        os.umask(old)
    assert root.stat().st_mode & 0o777 == 0o750


def test_transient_lock_leaves_no_lock_file_even_one_a_killed_run_left(tmp_path) -> None:
    from wsol.utils.io import LOCK_NAME

    with lock_run_folder(tmp_path, transient=True):
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()
    with lock_run_folder(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).is_file()
    with lock_run_folder(tmp_path, transient=True):
        pass
    assert not (tmp_path / LOCK_NAME).exists()
