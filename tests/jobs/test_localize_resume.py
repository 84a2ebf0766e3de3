"""`wsol localize` resumes per batch: a run stopped or killed mid-way, rerun with the same arguments, does only the
batches left and writes the files of an uninterrupted run; other arguments into the same output are refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from wsol.cli import run
from wsol.config import LocalizeConfig
from wsol.jobs.localize import partial_folder, run_localize
from wsol.models import build_model, save_model

SETTINGS = LocalizeConfig(sweep=True, masks=True, batch_size=4)  # 10 images: batches of 4, 4 and 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shapes_run) -> dict:
    made = shapes_run(tmp_path_factory.mktemp("resume"), n_test=10, num_classes=3, seed=5)
    reference = made["base"] / "reference" / "preds.json"
    run_localize(made["checkpoint"], "shapes", made["root"], reference, SETTINGS, show_progress=False)
    return {**made, "expected": _files(reference.parent)}


def _files(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


class Stop(Exception):
    pass


def _stop_after(k: int):
    def hook(batch: int) -> None:
        if batch == k:
            raise Stop

    return hook


def _localize(tiny: dict, out: Path, checkpoint: Optional[Path] = None) -> List[int]:
    """Run to the end; the batches this run did."""
    did: List[int] = []
    run_localize(checkpoint or tiny["checkpoint"], "shapes", tiny["root"], out, SETTINGS, show_progress=False, after_batch=did.append)
    return did


def test_a_run_stopped_after_a_batch_resumes_from_the_batches_done(tiny) -> None:
    out = tiny["base"] / "stopped" / "preds.json"
    with pytest.raises(Stop):
        run_localize(tiny["checkpoint"], "shapes", tiny["root"], out, SETTINGS, show_progress=False, after_batch=_stop_after(1))
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.json.partial"]
    assert sorted(p.name for p in partial_folder(out).iterdir()) == ["batch-000000.npz", "batch-000001.npz"]
    assert _localize(tiny, out) == [2]
    assert _files(out.parent) == tiny["expected"]  # byte for byte, and the .partial folder is gone


def test_other_arguments_into_an_unfinished_output_are_one_line(tiny, capsys) -> None:
    out = tiny["base"] / "other" / "preds.json"
    with pytest.raises(Stop):
        run_localize(tiny["checkpoint"], "shapes", tiny["root"], out, SETTINGS, show_progress=False, after_batch=_stop_after(0))
    before = _files(partial_folder(out))
    argv = ["localize", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out),
            "--sweep", "--masks", "--batch-size", "8"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--batch-size" in err and f"delete {partial_folder(out)}" in err, err
    assert _files(partial_folder(out)) == before and not out.exists()
    assert _localize(tiny, out) == [1, 2]
    assert _files(out.parent) == tiny["expected"]


def test_batches_of_a_checkpoint_rewritten_since_are_dropped(tiny, tmp_path, capsys) -> None:
    import shutil

    checkpoint = Path(shutil.copy(tiny["checkpoint"], tmp_path / "model.safetensors"))
    shutil.copy(tiny["checkpoint"].with_suffix(".json"), tmp_path / "model.json")
    out = tmp_path / "preds.json"
    with pytest.raises(Stop):
        run_localize(checkpoint, "shapes", tiny["root"], out, SETTINGS, show_progress=False, after_batch=_stop_after(1))
    save_model(build_model("small-cnn", 3, input_size=32), tmp_path / "model", dataset="shapes", method="natural")  # retrained
    capsys.readouterr()
    with pytest.raises(Stop):  # the old model's batch 1 goes before the new one writes batch 0: a rerun must not resume it
        run_localize(checkpoint, "shapes", tiny["root"], out, SETTINGS, show_progress=False, after_batch=_stop_after(0))
    assert "holds batches of an earlier version" in capsys.readouterr().err
    assert sorted(p.name for p in partial_folder(out).iterdir()) == ["batch-000000.npz"]
    assert _localize(tiny, out, checkpoint=checkpoint) == [1, 2]
    assert not partial_folder(out).exists()


def test_a_killed_run_leaves_only_whole_files_and_resumes(tiny) -> None:
    """A process killed by a timer at some point of its run (each batch held up by the hook so that it is mid-run)."""
    out = tiny["base"] / "killed" / "preds.json"
    script = ("import sys, time; from pathlib import Path; from wsol.config import LocalizeConfig; from wsol.jobs.localize import run_localize; "
              "run_localize(Path(sys.argv[1]), 'shapes', Path(sys.argv[2]), Path(sys.argv[3]), "
              "LocalizeConfig(sweep=True, masks=True, batch_size=4), show_progress=False, after_batch=lambda k: time.sleep(2))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tiny["checkpoint"]), str(tiny["root"]), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(partial_folder(out).glob("batch-*.npz")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # the timer: inside the second batch's wait
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err.decode()
    assert not out.exists()
    batches = sorted(partial_folder(out).glob("batch-*.npz"))
    assert [p.name for p in batches] == ["batch-000000.npz"]
    for path in batches:
        with np.load(path) as f:
            assert len(f["image_id"]) == 4
    assert _localize(tiny, out) == [1, 2]
    assert _files(out.parent) == tiny["expected"]


def test_sweep_without_boxes_keeps_no_batches_that_would_block_the_corrected_command(tiny, tmp_path, monkeypatch) -> None:
    import wsol.jobs.localize as job
    from wsol.errors import WsolError

    real = job.MapMetrics.summary
    monkeypatch.setattr(job.MapMetrics, "summary", lambda self: {k: v for k, v in real(self).items() if "gt_known" not in k})  # no GT boxes
    out = tmp_path / "preds.json"
    with pytest.raises(WsolError, match="--sweep needs ground-truth boxes"):
        run_localize(tiny["checkpoint"], "shapes", tiny["root"], out, SETTINGS, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_merge_opens_each_batch_file_once_and_writes_the_same_files(tiny, monkeypatch) -> None:
    """Rank 0 reads a batch file's counters and predictions from one opening (it used to open each file twice)."""
    out = tiny["base"] / "once" / "preds.json"
    opened: List[str] = []
    real = np.load

    def counting(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", counting)
    assert _localize(tiny, out) == [0, 1, 2]
    assert sorted(opened) == ["batch-000000.npz", "batch-000001.npz", "batch-000002.npz"]
    assert _files(out.parent) == tiny["expected"]
