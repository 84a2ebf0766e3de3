"""The attack jobs end to end on a tiny shapes set: resume, sharding, argument checks, reports."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from wsol.cli import run
from wsol.errors import ConfigError
from wsol.jobs.attack import AttributionAttackSettings, TargetedAttackSettings, inert_arguments, mean_interval, run_attribution_attack, summary_line
from wsol.jobs.runfolder import select_samples


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shapes_run) -> dict:
    return shapes_run(tmp_path_factory.mktemp("attack"), n_test=14, num_classes=2, seed=3)


ARGS = ["--attribution", "grad", "--k", "20", "--steps", "3", "--n", "10", "--batch-size", "3", "--pgd-steps", "2", "--seed", "1"]


def _attack(tiny: dict, out: Path, *extra: str) -> int:
    return run(["attack", "attribution", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out), *ARGS, *extra])


def _rows(folder: Path) -> list:
    with open(folder / "samples.csv") as f:
        return list(csv.DictReader(f))


def test_select_samples_is_reproducible_and_distinct() -> None:
    a = select_samples(100, 10, seed=4, default=50)
    assert a == select_samples(100, 10, seed=4, default=50) and len(set(a)) == 10 and a == sorted(a)
    assert a != select_samples(100, 10, seed=5, default=50)
    assert select_samples(5, 5, seed=0, default=50) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="--n 10"):
        select_samples(5, 10, seed=0, default=50)
    # no --n: the default count, or the whole split when it is smaller
    assert len(select_samples(100, None, seed=4, default=30)) == 30
    assert select_samples(5, None, seed=0, default=30) == [0, 1, 2, 3, 4]


def test_mean_interval_is_the_student_t_interval() -> None:
    from scipy import stats

    values = [1.0, 2.0, 4.0, float("nan"), 7.0]
    got = mean_interval(values)
    low, high = stats.t.interval(0.95, 3, loc=3.5, scale=stats.sem([1.0, 2.0, 4.0, 7.0]))
    assert got["n"] == 4 and got["mean"] == pytest.approx(3.5)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))


def test_an_interval_stays_within_the_values_its_metric_can_take(tiny) -> None:
    """IN 92 % over 2 samples had the interval [79.29, 104.7]: more than 100 % common pixels; clipped, the mean kept."""
    got = mean_interval([84.0, 100.0], bounds=(0.0, 100.0))
    assert got["mean"] == pytest.approx(92.0) and got["ci_high"] == 100.0 and got["ci_low"] < 84.0
    out = tiny["base"] / "bounded"
    assert _attack(tiny, out, "--n", "3", "--steps", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "clipped" in summary["interval"]
    assert set(summary["units"]) == set(summary["metrics"]) | {"natural_accuracy", "pgd_accuracy"}  # the file says its units
    assert summary["units"]["topk_intersection"].startswith("% ") and "pixels" in summary["units"]["center_shift"]
    for name, (low, high) in (("topk_intersection", (0, 100)), ("center_shift", (0, math.inf)), ("cos_x_grad", (-1, 1))):
        stats = summary["metrics"][name]
        assert stats["ci_low"] is None or low <= stats["ci_low"] <= stats["ci_high"] <= high, (name, stats)


def test_undefined_means_and_intervals_are_null_not_nan() -> None:
    assert mean_interval([float("nan")]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert mean_interval([0.5, float("nan")]) == {"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}
    summary = {"total": 3, "attacked": 1, "metrics": {"kendall": mean_interval([0.5]), "spearman": mean_interval([]),
                                                      "cos_x_grad": mean_interval([1.0, 3.0])}}
    line = summary_line(summary, Path("run"))
    assert "kendall 0.5 (no interval) n=1" in line and "spearman – (no sample has it)" in line and "nan" not in line
    assert "cos_x_grad 2 [-10.71, 14.71] n=2" in line
    assert "(1 sample)" in summary_line({"total": 1, "metrics": {}}, Path("run"))  # not "(1 samples)"


def test_summary_line_gives_the_accuracies_and_each_unit() -> None:
    """The line after a run read "topk_intersection 54.28 [...]" beside "cos_x_grad 0.08": percent, pixels and a cosine
    looked alike, and natural / PGD accuracy were missing; it now carries summary.json's units and accuracies."""
    from wsol.jobs.attack import ATTRIBUTION_UNITS

    summary = {"total": 10, "attacked": 9, "natural_accuracy": 90.0, "pgd_accuracy": 10.0, "units": ATTRIBUTION_UNITS,
               "metrics": {"topk_intersection": mean_interval([50.0, 60.0]), "center_shift": mean_interval([2.0, 4.0]),
                           "cos_x_grad": mean_interval([0.1, 0.2])}}
    line = summary_line(summary, Path("run"))
    assert "natural_accuracy 90.00 %, pgd_accuracy 10.00 %, topk_intersection 55 % [" in line, line
    assert "center_shift 3 px [" in line and "cos_x_grad 0.15 [" in line, line
    assert "pgd_accuracy" not in summary_line({**summary, "pgd_accuracy": None}, Path("run"))  # --pgd-steps 0


def _strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_attack_writes_one_row_per_sample_and_a_summary(tiny) -> None:
    out = tiny["base"] / "full"
    assert _attack(tiny, out) == 0
    rows = _rows(out)
    summary = _strict_json(out / "summary.json")
    assert [int(r["index"]) for r in rows] == select_samples(14, 10, seed=1, default=0)
    assert summary["total"] == 10 == summary["attacked"] + summary["misclassified"]
    attacked = [r for r in rows if r["attacked"] == "True"]
    assert len(attacked) == summary["attacked"]
    assert all(r["reason"] == "misclassified" for r in rows if r["attacked"] == "False")
    assert summary["misclassified"] and all(r["kendall"] == "" for r in rows if r["attacked"] == "False")  # undefined: an empty cell
    assert summary["natural_accuracy"] == pytest.approx(100 * sum(r["pred"] == r["label"] for r in rows) / 10)
    kept = [float(r["topk_intersection"]) for r in attacked if r["kept_prediction"] == "True"]
    assert kept and summary["metrics"]["topk_intersection"]["n"] == len(kept)
    assert summary["metrics"]["topk_intersection"]["mean"] == pytest.approx(100 * sum(kept) / len(kept))
    assert (out / "maps.npz").is_file()


def test_without_n_a_small_split_is_attacked_whole(tiny) -> None:
    out = tiny["base"] / "no_n"
    args = [a for i, a in enumerate(ARGS) if a != "--n" and (i == 0 or ARGS[i - 1] != "--n")]
    assert "--n" not in args
    assert run(["attack", "attribution", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]),
                "--out", str(out), *args]) == 0
    assert [int(r["index"]) for r in _rows(out)] == list(range(14))  # 14 test images < the default 1000


def test_resume_after_interrupt_gives_the_same_summary(tiny) -> None:
    reference = tiny["base"] / "full"
    if not (reference / "summary.json").is_file():
        assert _attack(tiny, reference) == 0
    out = tiny["base"] / "interrupted"

    class Stop(Exception):
        pass

    def stop(batch: int) -> None:
        raise Stop

    settings = AttributionAttackSettings(attribution="grad", k=20, steps=3, n=10, batch_size=3, pgd_steps=2, seed=1)
    with pytest.raises(Stop):
        run_attribution_attack(tiny["checkpoint"], "shapes", tiny["root"], out, settings, after_batch=stop)
    text = (out / "samples.csv").read_text()
    assert len(text.splitlines()) == 1 + 3 and not (out / "summary.json").exists()
    (out / "samples.csv").write_text(text[:-7])  # an interrupted write: the last row is cut
    assert _attack(tiny, out) == 0
    a, b = json.loads((reference / "summary.json").read_text()), json.loads((out / "summary.json").read_text())
    a["config"].pop("root"), b["config"].pop("root")
    metrics_a, metrics_b = a.pop("metrics"), b.pop("metrics")
    assert a == b
    for name, stats in metrics_a.items():  # other batch compositions: float rounding only
        assert stats == pytest.approx(metrics_b[name], rel=1e-4, abs=1e-5, nan_ok=True), name
    _same_rows(_rows(out), _rows(reference))
    with np.load(reference / "maps.npz") as full, np.load(out / "maps.npz") as resumed:  # the killed run's maps are kept
        assert resumed["index"].tolist() == full["index"].tolist()
        for name in full.files:
            np.testing.assert_allclose(resumed[name], full[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_maps_of_a_run_killed_before_its_first_row_are_not_kept(tiny) -> None:
    out = tiny["base"] / "killed_before_rows"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"attack": "attribution", "steps": 99}))  # other arguments, no row yet
    np.savez(out / "maps.npz", index=np.array([999]), image=np.zeros((1, 3, 2, 2), np.float32))
    assert _attack(tiny, out) == 0
    with np.load(out / "maps.npz") as maps:
        assert 999 not in maps["index"].tolist() and set(maps["index"].tolist()) <= {int(r["index"]) for r in _rows(out)}


def test_different_arguments_into_the_same_folder_are_refused(tiny, capsys) -> None:
    out = tiny["base"] / "full"
    if not (out / "summary.json").is_file():
        assert _attack(tiny, out) == 0
    capsys.readouterr()
    before = (out / "samples.csv").read_text()
    assert _attack(tiny, out, "--eps", "4/255") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eps" in err[0] and err[0].startswith("error:")
    assert (out / "samples.csv").read_text() == before


def test_the_same_eps_spelled_otherwise_resumes_instead_of_being_refused(tiny, capsys, monkeypatch) -> None:
    """--eps 8/255 then --eps 0.03137254901960784 (the number it prints, pasted back): the same attack, not other arguments."""
    monkeypatch.delenv("WSOL_PROGRESS", raising=False)  # the "done before" progress line is what shows the resume (CI sets 0)
    out = tiny["base"] / "spelled"
    assert _attack(tiny, out, "--steps", "1") == 0
    before = (out / "samples.csv").read_text()
    capsys.readouterr()
    assert _attack(tiny, out, "--steps", "1", "--eps", repr(8 / 255), "--step-size", " 1/255") == 0
    assert "(10 of 10 samples done before)" in capsys.readouterr().err
    assert (out / "samples.csv").read_text() == before
    assert _attack(tiny, out, "--steps", "1", "--eps", "0.03137255") == 0  # fewer digits, the same float32 radius
    assert "(10 of 10 samples done before)" in capsys.readouterr().err


def test_a_rerun_changing_only_arguments_without_effect_resumes(tiny, capsys, monkeypatch) -> None:
    """--ig-steps under --attribution grad, --pgd-eps and --pgd-step-size under --pgd-steps 0 change no result: a rerun
    that changes only them resumes instead of being refused as other arguments; under ig, --ig-steps is an argument."""
    monkeypatch.delenv("WSOL_PROGRESS", raising=False)  # the "done before" progress line is what shows the resume (CI sets 0)
    out = tiny["base"] / "inert"
    assert _attack(tiny, out, "--steps", "1", "--pgd-steps", "0") == 0
    before = (out / "samples.csv").read_text()
    capsys.readouterr()
    config = (out / "config.json").read_text()
    assert _attack(tiny, out, "--steps", "1", "--pgd-steps", "0", "--ig-steps", "7", "--pgd-eps", "4/255", "--pgd-step-size", "1/255",
                   "--batch-size", "3", "--eps", repr(8 / 255)) == 0
    assert "(10 of 10 samples done before)" in capsys.readouterr().err
    assert (out / "samples.csv").read_text() == before
    assert (out / "config.json").read_text() == config  # what produced the rows, not the rerun's arguments without effect
    assert json.loads((out / "summary.json").read_text())["config"] == json.loads(config)
    assert _attack(tiny, out, "--steps", "1", "--pgd-steps", "1", "--pgd-eps", "4/255", "--pgd-step-size", "1/255") == 2
    assert "other arguments (pgd_steps was 0, now 1)" in capsys.readouterr().err
    assert inert_arguments({"attribution": "ig", "pgd_steps": 40}) == set()
    assert inert_arguments({"attribution": "grad", "pgd_steps": 0}) == {"ig_steps", "pgd_eps", "pgd_step_size"}


@pytest.mark.parametrize("extra,reason", [
    (["--k", "2000"], "got k=2000"), (["--objective", "bogus"], "unknown IFIA objective 'bogus'"),
    (["--attribution", "cam"], "unknown attribution for attacks 'cam'"), (["--eps", "8/x"], "--eps: expected a number"),
    (["--n", "0"], "'--n'"), (["--preset", "nope"], "unknown IFIA preset 'nope'"),
    (["--preset", "official"], "defined for attribution 'ig' only"), (["--k", "1024"], "takes every pixel"),
])
def test_bad_arguments_write_nothing(tiny, capsys, extra, reason) -> None:
    out = tiny["base"] / "bad"
    assert _attack(tiny, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and reason in err[0], err  # refused for the reason the case names
    assert not out.exists()


def test_targeted_attack_rows(tiny) -> None:
    out = tiny["base"] / "targeted"
    args = ["attack", "targeted", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out),
            "--k", "20", "--steps", "3", "--n", "6", "--batch-size", "3"]
    assert run(args) == 0
    rows = _rows(out)
    assert len(rows) == 6 and all(int(r["target_index"]) in {int(q["index"]) for q in rows} for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 6 and set(summary["metrics"]) >= {"target_ssim", "original_ssim", "target_mse"}
    assert set(summary["units"]) == set(summary["metrics"]) and "fraction" in summary["units"]["target_topk"]  # the file says its units


def test_targeted_beta_growth_is_recorded_and_changes_the_attack(tiny) -> None:
    base = ["attack", "targeted", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]),
            "--k", "20", "--steps", "3", "--n", "3"]
    constant, growing = tiny["base"] / "beta_constant", tiny["base"] / "beta_growth"
    assert run(base + ["--out", str(constant), "--beta", "10"]) == 0
    assert run(base + ["--out", str(growing), "--beta-growth", "10:1000"]) == 0
    config = json.loads((growing / "config.json").read_text())
    assert config["beta_growth"] == "10:1000" and config["beta"] is None
    assert json.loads((constant / "config.json").read_text())["beta"] == 10
    assert TargetedAttackSettings().beta == 50.0  # the default constant β, recorded as before
    assert [r["target_mse"] for r in _rows(constant)] != [r["target_mse"] for r in _rows(growing)]


def test_targeted_sample_that_is_its_own_target_is_left_out_of_the_means(tiny) -> None:
    out = tiny["base"] / "own_target"
    own = select_samples(14, 4, seed=0, default=0)[0]
    args = ["attack", "targeted", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out),
            "--k", "20", "--steps", "2", "--n", "4", "--target-index", str(own)]
    assert run(args) == 0
    rows, summary = _rows(out), json.loads((out / "summary.json").read_text())
    assert summary["own_target"] == 1 and all(int(r["target_index"]) == own for r in rows)
    others = [float(r["target_mse"]) for r in rows if int(r["index"]) != own]
    assert summary["metrics"]["target_mse"]["n"] == 3 and summary["metrics"]["target_mse"]["mean"] == pytest.approx(sum(others) / 3)


def _sharded_worker(rank: int, world: int, port: int, tiny: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), WSOL_PROGRESS="0")
    torch.set_num_threads(1)
    assert _attack(tiny, Path(out)) == 0


def test_two_gloo_ranks_give_the_same_rows_as_one_process(tiny, free_port) -> None:
    single = tiny["base"] / "full"
    if not (single / "summary.json").is_file():
        assert _attack(tiny, single) == 0
    sharded = tiny["base"] / "sharded"
    mp.start_processes(_sharded_worker, args=(2, free_port, tiny, str(sharded)), nprocs=2, start_method="spawn")
    _same_rows(_rows(single), _rows(sharded))


def _same_rows(a: list, b: list) -> None:
    assert [r["index"] for r in a] == [r["index"] for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            if key in ("topk_intersection", "kendall", "spearman", "center_shift", "cos_x_grad") and "" not in (ra[key], rb[key]):
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-4, abs=1e-5), key
            else:
                assert ra[key] == rb[key], key


def test_readme_torchrun_lines_reach_wsol_unchanged() -> None:
    """torchrun's parser takes option prefixes (``--n`` is ambiguous there) unless ``--`` ends its options."""
    import shlex

    from torch.distributed.run import get_args_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text().replace("\\\n", " ")
    lines = [line.split("#")[0] for line in readme.splitlines() if line.startswith("torchrun ")]
    assert any(" attack " in line for line in lines)
    for line in lines:
        argv = shlex.split(line)[1:]
        parsed = get_args_parser().parse_args(argv)
        tail = argv[argv.index("wsol") + 1:]
        assert (parsed.module, parsed.training_script, parsed.training_script_args) == (True, "wsol", tail), line


def test_readme_names_every_samples_csv_column_in_order() -> None:
    """The README's list of an attribution run's samples.csv columns is the file's header, in its order."""
    import re

    from wsol.jobs.attack import ATTRIBUTION_COLUMNS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme[readme.index("`samples.csv` (one row per"):readme.index("`maps.npz` (images and maps")]
    assert re.findall(r"`([a-z_]+)`", listed) == list(ATTRIBUTION_COLUMNS)


def test_demo_section_reports_in_and_k_per_model(tiny) -> None:
    from wsol.jobs.attack import DEMO_COLUMNS, demo_attack_section

    rows = demo_attack_section({"natural": tiny["checkpoint"]}, tiny["root"], tiny["base"] / "demo", n=6)
    assert len(rows) == 1 and set(rows[0]) == set(DEMO_COLUMNS)
    summary = json.loads((tiny["base"] / "demo" / "natural" / "summary.json").read_text())
    assert rows[0]["IN"] == summary["metrics"]["topk_intersection"]["mean"] and rows[0]["attacked"] == summary["attacked"]


def test_a_checkpoint_whose_classes_are_not_the_datasets_is_refused_or_noted(tiny, tmp_path, capsys) -> None:
    """Same class count, other class names: recorded as trained on another dataset, one error before anything is written;
    with no dataset recorded (or wsolmeta, CUB's images under other names), the attack runs and says so on stderr."""
    import shutil

    other = tmp_path / "other.safetensors"
    shutil.copy(tiny["checkpoint"], other)
    meta = json.loads(Path(tiny["checkpoint"]).with_suffix(".json").read_text())
    other.with_suffix(".json").write_text(json.dumps({**meta, "dataset": "cifar10", "class_names": ["airplane", "automobile"]}))
    assert _attack(tiny, tmp_path / "a", "--n", "2", "--steps", "1", "--eps", "1/255", "--pgd-steps", "0") == 0 and "note:" not in capsys.readouterr().err
    argv = ["attack", "attribution", "--checkpoint", str(other), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(tmp_path / "b"),
            *ARGS, "--n", "2", "--steps", "1", "--eps", "1/255", "--pgd-steps", "0"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on cifar10 with classes airplane, automobile, but shapes has disc, square" in err
    assert "pass a checkpoint trained on shapes, or --dataset cifar10" in err and not (tmp_path / "b").exists()
    other.with_suffix(".json").write_text(json.dumps({**meta, "dataset": "wsolmeta", "class_names": ["airplane", "automobile"]}))
    assert run(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "trained on wsolmeta with classes airplane, automobile, but shapes has disc, square" in notes[0]


def test_reach_note_when_the_steps_cannot_reach_eps() -> None:
    from wsol.jobs.attack import reach_note

    assert reach_note(8 / 255, 1 / 255, 50) is None and reach_note(8 / 255, 1 / 255, 8) is None
    assert reach_note(8 / 255, 1 / 255, 10, random_start=True) is None
    text = reach_note(8 / 255, 1 / 255, 5)
    assert text is not None and "at most 5/255" in text and "--eps 8/255" in text
    assert reach_note(8 / 255, 1 / 255, 1).startswith("1 step of 1/255 moves a pixel by at most 1/255")  # "1 step ... move"


def test_notes_wait_until_the_folder_is_ours_so_an_error_comes_alone(tiny, tmp_path, capsys) -> None:
    """The reach note (and the class-names note) came before the folder was locked: into a folder in use, or one the
    user may not write, a note and then the error."""
    from wsol.utils.io import run_folder_lock

    out = tmp_path / "busy"
    with run_folder_lock(out):
        assert _attack(tiny, out, "--steps", "2", "--n", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: another wsol job is writing to") and err.count("\n") == 1, err


def test_the_attack_command_prints_the_reach_note(tiny, capsys) -> None:
    out = tiny["base"] / "short_reach"
    assert _attack(tiny, out, "--steps", "2", "--n", "2") == 0
    assert "note: 2 steps of 1/255 move a pixel by at most 2/255" in capsys.readouterr().err


def test_n_maps_sets_how_many_samples_keep_their_maps(tiny) -> None:
    out = tiny["base"] / "n_maps"
    assert _attack(tiny, out, "--n", "4", "--n-maps", "2", "--pgd-steps", "0") == 0
    with np.load(out / "maps.npz") as maps:
        assert maps["index"].tolist() == select_samples(14, 4, seed=1, default=0)[:2]
    assert json.loads((out / "config.json").read_text())["n_maps"] == 2
    none = tiny["base"] / "no_maps"
    assert _attack(tiny, none, "--n", "2", "--n-maps", "0", "--pgd-steps", "0") == 0
    assert not (none / "maps.npz").exists()


def test_rows_of_a_checkpoint_rewritten_since_are_dropped_not_mixed(tiny, tmp_path, capsys) -> None:
    """A run killed mid-way, the model retrained into the same file, the command rerun: it resumed the old model's rows
    and attacked only the rest with the new one, one summary over two models. Now it starts over, and says so."""
    import shutil

    from wsol.models import build_model, save_model

    checkpoint = Path(shutil.copy(tiny["checkpoint"], tmp_path / "model.safetensors"))
    shutil.copy(tiny["checkpoint"].with_suffix(".json"), tmp_path / "model.json")
    argv = ["attack", "attribution", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--root", str(tiny["root"]), *ARGS]
    assert run([*argv, "--out", str(tmp_path / "old")]) == 0
    shutil.copytree(tmp_path / "old", tmp_path / "run")
    torch.manual_seed(7)
    save_model(build_model("small-cnn", 2, input_size=32), tmp_path / "model", dataset="shapes", method="natural")  # retrained
    assert run([*argv, "--out", str(tmp_path / "fresh")]) == 0
    capsys.readouterr()
    assert run([*argv, "--out", str(tmp_path / "run")]) == 0
    assert "holds rows of an earlier version" in capsys.readouterr().err
    assert _rows(tmp_path / "run") == _rows(tmp_path / "fresh") != _rows(tmp_path / "old")
    assert (tmp_path / "run" / "maps.npz").read_bytes() == (tmp_path / "fresh" / "maps.npz").read_bytes()


def test_a_run_killed_while_dropping_the_rows_of_a_rewritten_checkpoint_does_not_resume_them(tiny, tmp_path, monkeypatch) -> None:
    """Starting over for a retrained checkpoint wrote config.json (the new digest) before it dropped the old rows: a
    kill between the two left the old model's rows under the new digest, and the rerun resumed them as the new model's."""
    import shutil

    import wsol.jobs.attack as attack
    from wsol.models import build_model, save_model

    checkpoint = Path(shutil.copy(tiny["checkpoint"], tmp_path / "model.safetensors"))
    shutil.copy(tiny["checkpoint"].with_suffix(".json"), tmp_path / "model.json")
    argv = ["attack", "attribution", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--root", str(tiny["root"]), *ARGS]
    assert run([*argv, "--out", str(tmp_path / "run")]) == 0
    torch.manual_seed(7)
    save_model(build_model("small-cnn", 2, input_size=32), tmp_path / "model", dataset="shapes", method="natural")  # retrained

    class Killed(BaseException):
        pass

    writes = []

    def once_then_killed(write: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if writes:
                raise Killed  # the process dies after the run's first file write
            writes.append(args[0])
            return write(*args, **kwargs)
        return wrapped

    with monkeypatch.context() as m:
        m.setattr(attack, "write_json", once_then_killed(attack.write_json))
        m.setattr(attack, "atomic_write_text", once_then_killed(attack.atomic_write_text))
        with pytest.raises(Killed):
            run([*argv, "--out", str(tmp_path / "run")])
    assert run([*argv, "--out", str(tmp_path / "run")]) == 0
    assert run([*argv, "--out", str(tmp_path / "fresh")]) == 0
    assert _rows(tmp_path / "run") == _rows(tmp_path / "fresh")


def test_a_start_over_killed_before_the_rows_go_leaves_no_summary_of_the_old_model(tiny, tmp_path, monkeypatch, capsys) -> None:
    """The start-over drops the summary, which reads as the finished run's, before the rows a rerun resumes from: a kill in
    between leaves the old rows beside the old config.json, so the rerun starts over again and no old summary stays."""
    import shutil

    from wsol.models import build_model, save_model

    checkpoint = Path(shutil.copy(tiny["checkpoint"], tmp_path / "model.safetensors"))
    shutil.copy(tiny["checkpoint"].with_suffix(".json"), tmp_path / "model.json")
    argv = ["attack", "attribution", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--root", str(tiny["root"]), *ARGS,
            "--out", str(tmp_path / "run")]
    assert run(argv) == 0
    torch.manual_seed(7)
    save_model(build_model("small-cnn", 2, input_size=32), tmp_path / "model", dataset="shapes", method="natural")  # retrained
    unlink = Path.unlink

    def killed_at_the_rows(path: Path, missing_ok: bool = False) -> None:
        if path.name == "samples.csv":
            raise KeyboardInterrupt
        unlink(path, missing_ok=missing_ok)

    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", killed_at_the_rows)
        assert run(argv) == 130  # Ctrl-C's status
    assert not (tmp_path / "run" / "summary.json").exists() and _rows(tmp_path / "run")
    capsys.readouterr()
    assert run(argv) == 0
    assert "holds rows of an earlier version" in capsys.readouterr().err


def test_loader_options_are_recorded_and_part_of_the_run(tiny, tmp_path, capsys) -> None:
    """`attack attribution -o KEY=VALUE` reads the dataset with the option and records it in config.json (only when given:
    a folder written before -o existed resumes); another value into the same --out is other arguments."""
    out = tmp_path / "opts"
    assert _attack(tiny, out, "--n", "3", "-o", "native_size=32") == 0
    assert json.loads((out / "config.json").read_text())["dataset_options"] == {"native_size": 32}
    capsys.readouterr()
    assert _attack(tiny, out, "--n", "3", "-o", "native_size=31") == 2
    assert "other arguments (dataset_options.native_size was 32, now 31)" in capsys.readouterr().err
    assert _attack(tiny, out, "--n", "3", "-o", "bogus=1") == 2
    assert "dataset 'shapes' has no option 'bogus'" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert _attack(tiny, plain, "--n", "3") == 0
    assert "dataset_options" not in json.loads((plain / "config.json").read_text())
