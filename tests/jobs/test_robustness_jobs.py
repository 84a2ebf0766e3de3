"""Robustness jobs: argument parsing, resume after an interruption, two gloo ranks, the shipped ResNet-18 from the CLI."""
from __future__ import annotations

import csv
import json
import math
import re
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

import wsol.jobs.robustness as job
from wsol.metrics.robustness import summary_rows
from wsol.cli import run
from wsol.errors import ConfigError, WsolError

NAMES = [f"c{i}".encode() for i in range(10)]


def make_cifar(root: Path, n_test: int = 24) -> Path:
    """A CIFAR-10 python tree (pickled batches, N×3072 uint8 rows); an image of class c is noise with mean 4c + 50."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(labels):
        data = np.stack([rng.integers(4 * c, 4 * c + 101, size=3072) for c in labels]).astype(np.uint8)
        return {b"labels": list(labels), b"data": data, b"filenames": [f"{i}.png".encode() for i in range(len(labels))], b"batch_label": b"b"}

    for name, obj in [("batches.meta", {b"label_names": NAMES}), *[(f"data_batch_{i}", batch([i])) for i in range(1, 6)],
                      ("test_batch", batch([i % 10 for i in range(n_test)]))]:
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh)
    return root


class MeanClassifier(nn.Module):
    """Nearest class centre on the image mean (centres 4c + 50 in 1/255): an ε of 2/255 reaches the boundaries."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres = (4 * torch.arange(10, device=x.device) + 50) / 255
        return -((x.mean((1, 2, 3))[:, None] - centres) * 255) ** 2


def tiny_model(name: str = "", weights=None, device="cpu") -> nn.Module:
    return MeanClassifier().to(device).eval()


def settings(**kw) -> job.RobustnessSettings:
    base = dict(model="tiny", weights=[], dataset="cifar10", n=14, seed=3, eps=2 / 255, ladder=["apgd-ce", "apgd-dlr"],
                sweep=[0, 1, 2, 4], sweep_attack="apgd-ce", batch_size=4, n_iter=3, n_restarts=1)
    base.update(kw)
    return job.RobustnessSettings(**base)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(job, "load_eval_model", tiny_model)
    monkeypatch.setenv("WSOL_PROGRESS", "0")


def _tables(result: dict) -> dict:
    return {"ladder": result["ladder-fp32"]["rows"], "ladder_conf": result["ladder-fp32"]["confusion"].tolist(),
            "sweep": result["sweep-fp32"]["rows"], "sweep_conf": result["sweep-fp32"]["confusion"].tolist()}


def _without_minutes(rows):
    return [{k: v for k, v in r.items() if k != "minutes"} for r in rows]


def test_an_empty_sweep_says_it_is_empty() -> None:
    with pytest.raises(ConfigError, match="--eps-sweep is empty"):
        job.parse_eps_sweep("  ")


def test_parse_eps_and_sweep() -> None:
    assert job.parse_eps("8/255") == pytest.approx(8 / 255) and job.parse_eps("0.5") == 0.5
    assert job.parse_eps_sweep("0:8") == list(range(9)) and job.parse_eps_sweep("0,2,4") == [0, 2, 4]
    for bad in ("8/0", "x", "-1", "1/2/3"):
        with pytest.raises(ConfigError):
            job.parse_eps(bad)
    for bad in ("3:1", "0,2,2", "a,b", "", "0:x", "-1:2", "2", "4:4", "0:8:0", "0:8:-2", "1:2:3:4", "8,4,2", "0,,8"):
        with pytest.raises(ConfigError):
            job.parse_eps_sweep(bad)


def test_a_bare_whole_eps_is_refused_as_a_forgotten_255() -> None:
    """--eps 8 (or 1 in linf) is 8/255 with the fraction forgotten; the error says which fraction was meant."""
    with pytest.raises(ConfigError, match=r"did you mean --eps 8/255\?"):
        job.parse_eps("8")
    with pytest.raises(ConfigError, match=r"did you mean --pgd-eps 1/255\?.*255/255"):
        job.parse_eps("1.0", "--pgd-eps")
    assert job.parse_eps("255/255") == 1.0 and job.parse_eps("1", norm="l2") == 1.0 and job.parse_eps("0") == 0.0
    with pytest.raises(ConfigError, match="above 0"):
        job.parse_eps("0", "--step-size", positive=True)


@pytest.mark.parametrize("text", ["300", "1e9"])
def test_a_whole_eps_above_255_gets_the_range_not_a_fraction_past_1(text) -> None:
    """--eps 300 or 1e9 over 255 is still above 1: "did you mean 300/255?" would suggest another invalid radius."""
    with pytest.raises(ConfigError, match=rf"must lie in \[0, 1\] \(e.g. 8/255\), got '{text}'"):
        job.parse_eps(text)


def test_an_l2_radius_may_exceed_one_pixel_range() -> None:
    """ℓ2 radii above 1 are common (ε = 3 on larger images): neither refused nor taken for a forgotten /255."""
    assert job.parse_eps("2", norm="l2") == 2.0 and job.parse_eps("3.0", norm="l2") == 3.0
    with pytest.raises(ConfigError, match="ℓ2 radius"):
        job.parse_eps("-0.5", norm="l2")


def test_eps_help_says_a_bare_number_is_refused(capsys) -> None:
    assert run(["robustness", "evaluate", "--help"]) == 0
    assert "forgotten /255" in " ".join(capsys.readouterr().out.replace("│", " ").split())  # rich wraps the help in a box


def test_eps_is_shown_as_the_user_typed_it() -> None:
    assert [job.eps_text(e) for e in (8 / 255, 0.5, 1.0, 0.0, 0.03)] == ["8/255", "0.5", "1", "0", "0.03"]


def test_an_l2_sweep_is_a_list_of_radii_and_the_linf_form_is_refused_with_how_to_write_it() -> None:
    """ℓ2 radii are not x/255: 0:8 would be radii up to 8/255 = 0.03 (RobustBench's ℓ2 budget is 0.5), so the ℓ∞ range
    form is a one-line error that says how to write an ℓ2 grid; each norm has its own default grid."""
    assert job.parse_eps_sweep("0,0.25,0.5,1", "l2") == [0, 0.25, 0.5, 1.0]
    assert job.parse_eps_sweep("0, 64/255, 3", "l2") == [0, pytest.approx(64 / 255), 3.0]
    assert job.parse_eps_sweep(None, "l2") == [0, 0.25, 0.5, 1.0] and job.parse_eps_sweep(None) == list(range(9))
    for bad in ("0:8", "0:1:0.25"):
        with pytest.raises(ConfigError, match=r"comma list of radii .* --eps-sweep 0,0.25,0.5,1 .*for linf"):
            job.parse_eps_sweep(bad, "l2")
    for bad, why in (("0.5", r"at least two values, e.g. 0,0.5; .*--norm l2 --eps 0.5"), ("0.5,0.25", "increasing"),
                     ("0,x", "expected a number"), ("0,,1", "empty entry"), ("", "empty")):
        with pytest.raises(ConfigError, match=why):
            job.parse_eps_sweep(bad, "l2")
    assert job.sweep_radii([0, 2, 8], "linf") == [0, 2 / 255, 8 / 255] and job.sweep_radii([0, 0.5], "l2") == [0, 0.5]


def test_l2_sweep_attacks_at_its_radii_and_labels_them_as_radii(cifar, tmp_path, tiny, monkeypatch) -> None:
    """The ℓ2 grid reaches the attack as radii (not x/255) and every table, figure and report line names ε's unit."""
    import wsol.report.robustness_figures as figures

    radii, axes = [], []
    real_sweep, real_plot = job.epsilon_sweep, figures.plot_class_accuracy_vs_eps
    monkeypatch.setattr(job, "epsilon_sweep", lambda *a, **kw: radii.append(list(a[4])) or real_sweep(*a, **kw))
    monkeypatch.setattr(figures, "plot_class_accuracy_vs_eps", lambda *a, **kw: axes.append(kw["eps_axis"]) or real_plot(*a, **kw))
    for name, norm, column, grid in (("l2", L2, "eps (l2 radius)", "ℓ2 radius ε in 0, 0.25, 0.5, 1"),
                                     ("linf", {}, "eps (x/255)", "ε = x/255, x in 0, 1, 2, 4")):
        out = tmp_path / name
        job.evaluate_robustness(settings(ladder=[], n=4, **norm), cifar, out, "cpu")
        assert (out / "sweep_fp32.csv").read_text().splitlines()[1].startswith(f"tiny,0")
        assert f"model,{column}," in (out / "sweep_fp32.csv").read_text() and f",{column}," in (out / "sweep_summary_fp32.csv").read_text()
        assert grid in (out / "report.md").read_text()
    assert radii == [[0, 0.25, 0.5, 1.0], [0, 1 / 255, 2 / 255, 4 / 255]]
    assert axes == ["ε (ℓ2 radius, pixel units of [0, 1])", "ε (×1/255)"]
    assert json.loads((tmp_path / "l2" / "run.json").read_text())["sweep"] == [0, 0.25, 0.5, 1.0]
    assert "Confusion at ε = 1 (" in (tmp_path / "l2" / "report.md").read_text()
    assert "Confusion at ε = 4/255 (" in (tmp_path / "linf" / "report.md").read_text()
    attacked = re.search(r"Points attacked per ε \(the clean-correct ones at the first ε > 0, then those still robust at the ε before\): (.*?)\. Budget", (tmp_path / "linf" / "report.md").read_text())
    counts = re.fullmatch(r"0: 0, 1/255: (\d+), 2/255: (\d+), 4/255: (\d+); (\d+) in all, where an independent run per ε > 0 would attack (\d+)",
                          attacked.group(1))
    first, second, third, total, independent = (int(v) for v in counts.groups())
    assert first >= second >= third and total == first + second + third and independent == 3 * first
    assert re.search(r"\): 0: 0, 0\.25: \d+, 0\.5: \d+, 1: \d+; \d+ in all, where an independent run per ε > 0 would attack \d+\. Budget",
                     (tmp_path / "l2" / "report.md").read_text())


def test_report_tables_write_an_l2_radius_as_given_not_at_three_decimals(cifar, tmp_path, tiny) -> None:
    """An ℓ2 radius of 0.0625 at the tables' 3 decimals read 0.062, a radius nobody swept; the CSV keeps the number."""
    job.evaluate_robustness(settings(ladder=[], n=4, norm="l2", eps=0.5, sweep=[0.0, 0.0625]), cifar, tmp_path / "run", "cpu")
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    study_text = job.run_study(study, settings(model="", ladder=["apgd-ce"], n=4, norm="l2", eps=0.5, sweep=[0.0, 0.0625]), cifar,
                               tmp_path / "study", "cpu").read_text()
    for text in ((tmp_path / "run" / "report.md").read_text(), study_text):
        assert len(re.findall(r"^\| (?:tiny|a) \| 0\.0625 \|", text, flags=re.M)) == 2  # the sweep and the summary row
        assert not re.search(r"^\| (?:tiny|a) \| 0\.062 \|", text, flags=re.M)
    assert (tmp_path / "run" / "sweep_fp32.csv").read_text().splitlines()[2].startswith("tiny,0.0625,")


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_eps_defaults_to_the_budget_of_its_norm(cifar, tmp_path, tiny, norm, eps) -> None:
    """Without --eps, an ℓ2 ladder runs at RobustBench's ℓ2 radius 0.5, not at the ℓ∞ 8/255 (0.03)."""
    args = ["robustness", "evaluate", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--norm", norm, "--attacks", "apgd-ce",
            "--n", "4", "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert run(args) == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["eps"] == pytest.approx(eps)


@pytest.mark.parametrize("norm, eps, shown", [("linf", "8/255", "8"), ("linf", "0.03", "7.65"), ("l2", "0.0625", "0.0625")])
def test_the_pgd_table_writes_eps_as_the_sweep_tables_do(cifar, tmp_path, tiny, norm, eps, shown) -> None:
    """Its ε column (x of x/255) showed 8/255 as 8.0000 in report.md (the table's 4 decimals) and 8.0 in the CSV."""
    args = ["robustness", "evaluate", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--norm", norm, "--attacks", "apgd-ce",
            "--pgd", "1", "--eps", eps, "--n", "4", "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert run(args) == 0
    assert re.search(rf"^\| tiny \| PGD-1 \| {norm} \| ce \| 1 \| {re.escape(shown)} \|", (tmp_path / "r" / "report.md").read_text(), flags=re.M)
    cell = next(csv.DictReader(open(tmp_path / "r" / "pgd_fp32.csv", newline="")))[job.SWEEP_COLUMN[norm]]
    assert float(cell) == pytest.approx(float(shown)) and (cell == shown or norm == "linf" and shown != "8")  # the CSV: the number itself


def test_the_std_over_classes_is_the_population_std_and_the_report_says_so(cifar, tmp_path, tiny) -> None:
    """sweep_summary's std is numpy's std of the class accuracies in sweep.csv with ddof=0 (classes without a sample left
    out); report.md said "std" without saying which, and a sample std is 5 % larger at 10 classes."""
    job.evaluate_robustness(settings(ladder=[], n=14, sweep=[0, 1.5]), cifar, tmp_path / "r", "cpu")  # 9 classes; at 1.5/255 some fall
    sweep = list(csv.DictReader(open(tmp_path / "r" / "sweep_fp32.csv", newline="")))
    summary = list(csv.DictReader(open(tmp_path / "r" / "sweep_summary_fp32.csv", newline="")))
    names = [f"c{i}" for i in range(10)]
    accs = [np.array([float(row[c]) for c in names if row[c] != ""]) for row in sweep]
    assert [float(r["std"]) for r in summary] == pytest.approx([np.std(acc, ddof=0) for acc in accs])
    assert any(1 < len(acc) < 10 and acc.std(ddof=0) != pytest.approx(acc.std(ddof=1)) for acc in accs)  # the two differ here
    assert job.SPREAD_NOTE in (tmp_path / "r" / "report.md").read_text() and "population standard deviation" in job.SPREAD_NOTE


def test_pgd_loss_takes_any_case_as_norm_does(cifar, tmp_path, tiny) -> None:
    """--norm L2 was taken and --pgd-loss CW refused as an unknown loss."""
    args = ["robustness", "evaluate", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--attacks", "apgd-ce", "--pgd", "1",
            "--pgd-loss", "CW", "--n", "4", "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert run(args) == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["pgd_loss"] == "cw"


def test_eps_sweep_forms_a_user_types(capsys) -> None:
    assert job.parse_eps_sweep("0:8:2") == [0, 2, 4, 6, 8] and job.sweep_step_note("0:8:2") is None
    assert job.parse_eps_sweep("0:7:2") == [0, 2, 4, 6]  # range semantics, but the user is told the end point is left out
    assert job.sweep_step_note("0:7:2") == "--eps-sweep 0:7:2 is 0,2,4,6: its step stops at 6 and leaves out 7 (a list such as 0,2,4,6,7 keeps it)"
    assert capsys.readouterr().err == ""  # parsing is silent: the job notes it once its checks pass
    assert job.sweep_step_note("0,2,4") is None and job.sweep_step_note(None) is None and job.sweep_step_note("0,0.5", "l2") is None


def test_a_step_past_the_whole_range_is_one_error_that_says_so(capsys) -> None:
    """0:8:9 is the single value 0: it was a note that the step leaves out 8 and then an error suggesting
    `wsol robustness evaluate --eps 0`, two lines and the wrong fix; it is one error about the step."""
    with pytest.raises(ConfigError, match=r"bad --eps-sweep '0:8:9': its step 9 is larger than the range 0:8, which leaves 0 alone; "
                                          r"use a smaller step, e.g. 0:8:2"):
        job.parse_eps_sweep("0:8:9")
    assert capsys.readouterr().err == ""


def test_the_step_note_comes_once_the_checks_pass(cifar, tmp_path, tiny, capsys) -> None:
    """The note about 0:3:2 leaving out 3 is printed by the run (after its checks), not by the parser before them."""
    args = ["robustness", "per-class", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--eps-sweep", "0:3:2",
            "--n", "4", "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert run(args) == 0
    assert "note: --eps-sweep 0:3:2 is 0,2: its step stops at 2 and leaves out 3" in capsys.readouterr().err


def test_eps_sweep_note_comes_from_rank_0_alone_under_torchrun(capsys, monkeypatch) -> None:
    """The CLI parses --eps-sweep before the process group exists: each torchrun rank printed the note."""
    monkeypatch.setenv("RANK", "1")
    assert job.parse_eps_sweep("0:7:2") == [0, 2, 4, 6] and capsys.readouterr().err == ""
    assert job.parse_eps_sweep("0,2,4,") == [0, 2, 4] and job.parse_eps_sweep(" 0, 2 ,4 ") == [0, 2, 4]
    with pytest.raises(ConfigError, match="at most 255") as err:
        job.parse_eps_sweep("0:300")
    assert "--eps " not in str(err.value)


@pytest.mark.parametrize("text, hint", [
    ("0,0.01,0.03", "linf sweeps are x of ε = x/255 (integers), not radii; 0.01 ≈ 3/255, 0.03 ≈ 8/255: you probably meant --eps-sweep 0,3,8"),
    ("0,8/255,16/255", "not radii: you probably meant --eps-sweep 0,8,16"),
    ("1.5,2", "a comma list such as 0,1,2,4,8 (integers, ε = x/255)"),
])
def test_a_linf_sweep_written_as_radii_shows_the_grid_meant(text, hint) -> None:
    with pytest.raises(ConfigError) as err:
        job.parse_eps_sweep(text)
    assert str(err.value).startswith(f"bad --eps-sweep {text!r}: ") and str(err.value).endswith(hint) and "\n" not in str(err.value)


L2 = dict(norm="l2", eps=0.5, sweep=[0.0, 0.25, 0.5, 1.0])
"""An ℓ2 run of the tiny model: radii that move an image's mean across 0, 1 and 2 class boundaries."""


@pytest.mark.parametrize("norm", [{}, L2], ids=["linf", "l2"])
def test_resume_after_interruption_gives_the_same_table(cifar, tmp_path, tiny, norm) -> None:
    whole = job.evaluate_robustness(settings(**norm), cifar, tmp_path / "whole", "cpu")
    out = tmp_path / "cut"
    job.evaluate_robustness(settings(**norm), cifar, out, "cpu")
    for kind in ("ladder", "sweep"):
        path = out / f"{kind}-fp32.rank0.jsonl"
        lines = path.read_text().splitlines()
        assert len(lines) == 4  # 14 samples in chunks of 4
        path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # one chunk kept, one torn mid-write
    (out / "report.md").unlink()
    resumed = job.evaluate_robustness(settings(**norm), cifar, out, "cpu")
    for name in ("sweep_fp32.csv", "sweep_confusion_fp32.csv", "ladder_confusion_fp32.csv", "ladder_per_class_fp32.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert _without_minutes(_tables(resumed)["ladder"]) == _without_minutes(_tables(whole)["ladder"])
    kept = json.loads((out / "sweep-fp32.rank0.jsonl").read_text().splitlines()[0])
    assert kept["chunk"] == 0 and (out / "report.md").is_file()
    chunks = [json.loads(line)["chunk"] for line in (out / "ladder-fp32.rank0.jsonl").read_text().splitlines()[1:] if line.startswith("{") and line.endswith("}")]
    assert sorted(chunks) == [1, 2, 3]  # only the missing chunks were attacked again
    sweep = whole["sweep-fp32"]["acc"]
    assert bool((sweep[1:].nan_to_num(0) <= sweep[:-1].nan_to_num(0) + 1e-9).all())  # monotone in ε
    assert sweep[-1].nan_to_num(0).sum() < sweep[0].nan_to_num(0).sum()  # and the largest ε breaks some points


def test_resumed_apgd_and_pgd_run_reproduces_the_uninterrupted_one(tmp_path, tiny) -> None:
    """APGD (pyautoattack) and PGD are seeded per chunk of --batch-size samples, so an interrupted run resumed with
    the same arguments gives exactly the table of an uninterrupted one."""
    root = make_cifar(tmp_path / "cifar", n_test=12)
    s = job.RobustnessSettings(model="centres", weights=[], dataset="cifar10", n=10, seed=2, eps=1 / 255, ladder=["apgd-dlr", "apgd-ce"],
                               pgd_steps=3, batch_size=4, n_iter=4, n_restarts=1)
    job.evaluate_robustness(s, root, tmp_path / "whole", "cpu")
    out = tmp_path / "cut"
    job.evaluate_robustness(s, root, out, "cpu")
    for kind in ("ladder", "pgd"):
        path = out / f"{kind}-fp32.rank0.jsonl"
        lines = path.read_text().splitlines()
        assert len(lines) == 3  # 10 samples in chunks of 4
        path.write_text(lines[1] + "\n")  # only the middle chunk survived the interruption
    job.evaluate_robustness(s, root, out, "cpu")
    for name in ("ladder_per_class_fp32.csv", "ladder_confusion_fp32.csv", "pgd_fp32.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    accuracy = [line.split(",")[3] for line in (out / "ladder_fp32.csv").read_text().splitlines()]
    assert accuracy == [line.split(",")[3] for line in (tmp_path / "whole" / "ladder_fp32.csv").read_text().splitlines()]


def test_other_arguments_into_the_same_folder_are_refused(cifar, tmp_path, tiny) -> None:
    out = tmp_path / "run"
    job.evaluate_robustness(settings(ladder=["apgd-ce"], sweep=[]), cifar, out, "cpu")
    with pytest.raises(ConfigError, match="other arguments"):
        job.evaluate_robustness(settings(ladder=["apgd-ce"], sweep=[], seed=4), cifar, out, "cpu")


def test_a_run_killed_before_its_first_chunk_takes_other_arguments(cifar, tmp_path, tiny) -> None:
    """Only run.json there (killed before any result): nothing to keep, so other arguments start the run afresh."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({**json.loads(json.dumps(job.asdict(settings(seed=4))))}))
    job.evaluate_robustness(settings(ladder=["apgd-ce"], sweep=[]), cifar, out, "cpu")
    assert json.loads((out / "run.json").read_text())["seed"] == 3


def test_run_json_keeps_each_attacks_budget_for_the_ladder_and_the_sweep(cifar, tmp_path, tiny) -> None:
    """The same attack name runs with other budgets in a ladder and in the sweep: run.json says which ran."""
    out = tmp_path / "run"
    job.evaluate_robustness(settings(ladder=list(job.LADDERS["standard"]), n_restarts=None, n_iter=2, n_queries=5, sweep=[0, 1]),
                            cifar, out, "cpu")
    record = json.loads((out / "run.json").read_text())
    assert record["ladder_budgets"]["apgd-ce"] == "2 iterations, 1 restart"  # AutoAttack standard's APGD-CE
    assert record["ladder_budgets"]["square"] == "5 queries, 1 restart"
    assert record["sweep_budgets"] == {"apgd-ce": "2 iterations, 5 restarts"}  # the custom version's


def _written_before_budgets(out: Path) -> None:
    """Make ``out``'s run.json look like one written before the budgets were recorded."""
    record = json.loads((out / "run.json").read_text())
    for key in ("ladder_budgets", "sweep_budgets"):
        record.pop(key, None)
    (out / "run.json").write_text(json.dumps(record))


def test_a_run_written_before_budgets_were_recorded_resumes_unless_it_was_the_standard_ladder(cifar, tmp_path, tiny) -> None:
    """An older wsol ran --ladder standard's APGD-CE with 5 restarts (today: 1): resuming it would mix the two."""
    kept = settings(ladder=["apgd-ce", "apgd-dlr"], sweep=[0, 1])
    job.evaluate_robustness(kept, cifar, tmp_path / "kept", "cpu")
    _written_before_budgets(tmp_path / "kept")
    job.evaluate_robustness(kept, cifar, tmp_path / "kept", "cpu")
    assert "ladder_budgets" in json.loads((tmp_path / "kept" / "run.json").read_text())
    standard = settings(ladder=list(job.LADDERS["standard"]), n_restarts=None, n_iter=2, n_queries=5, sweep=[])
    job.evaluate_robustness(standard, cifar, tmp_path / "std", "cpu")
    _written_before_budgets(tmp_path / "std")
    with pytest.raises(ConfigError, match=r"other arguments \(ladder_budgets: .*--ladder standard, whose APGD-CE ran 5 restarts\); the same arguments cannot resume it: use another --out, or delete .*std to redo it$"):
        job.evaluate_robustness(standard, cifar, tmp_path / "std", "cpu")
    restarts = replace(standard, n_restarts=2)  # --n-restarts set APGD-CE's restarts then as now: the same budgets
    job.evaluate_robustness(restarts, cifar, tmp_path / "restarts", "cpu")
    _written_before_budgets(tmp_path / "restarts")
    job.evaluate_robustness(restarts, cifar, tmp_path / "restarts", "cpu")


def test_a_weight_path_spelled_otherwise_resumes_the_same_run(cifar, tmp_path, tiny, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    job.evaluate_robustness(settings(weights=["w/model.safetensors"], ladder=["apgd-ce"], sweep=[]), cifar, out, "cpu")
    again = settings(weights=[str(tmp_path / "w" / "model.safetensors")], ladder=["apgd-ce"], sweep=[])
    job.evaluate_robustness(again, cifar, out, "cpu")  # `wsol demo --out runs/demo`, then the same with an absolute --out
    assert json.loads((out / "run.json").read_text())["weights"] == [str(tmp_path / "w" / "model.safetensors")]


def test_an_eps_pasted_with_fewer_digits_resumes_and_another_eps_is_refused(cifar, tmp_path, tiny) -> None:
    """0.0078431373 is 2/255 to float32, the precision of the attack: the same run; 0.0079 is another radius."""
    out = tmp_path / "run"
    job.evaluate_robustness(settings(ladder=["apgd-ce"], sweep=[]), cifar, out, "cpu")
    job.evaluate_robustness(settings(ladder=["apgd-ce"], sweep=[], eps=0.0078431373), cifar, out, "cpu")
    with pytest.raises(ConfigError, match=r"other arguments \(eps was 0.00784314, now 0.0079\)"):
        job.evaluate_robustness(settings(ladder=["apgd-ce"], sweep=[], eps=0.0079), cifar, out, "cpu")


def _worker(rank: int, world: int, port: int, root: str, out: str, norm: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      WSOL_PROGRESS="0")
    torch.set_num_threads(1)
    job.load_eval_model = tiny_model
    job.evaluate_robustness(settings(**norm), Path(root), Path(out), "cpu")
    from wsol.utils.distributed import cleanup

    cleanup()


@pytest.mark.parametrize("norm", [{}, L2], ids=["linf", "l2"])
def test_two_gloo_ranks_give_the_same_rows_as_one_process(cifar, tmp_path, tiny, free_port, norm) -> None:
    single = _tables(job.evaluate_robustness(settings(**norm), cifar, tmp_path / "single", "cpu"))
    sharded = tmp_path / "sharded"
    mp.start_processes(_worker, args=(2, free_port, str(cifar), str(sharded), norm), nprocs=2, start_method="spawn")
    assert sorted(p.name for p in sharded.glob("*.jsonl")) == [f"{k}-fp32.rank{r}.jsonl" for k in ("ladder", "sweep") for r in (0, 1)]
    assert (sharded / "sweep_fp32.csv").read_text() == (tmp_path / "single" / "sweep_fp32.csv").read_text()
    assert (sharded / "ladder_confusion_fp32.csv").read_text() == (tmp_path / "single" / "ladder_confusion_fp32.csv").read_text()
    ladder = [line.split(",") for line in (sharded / "ladder_fp32.csv").read_text().splitlines()[1:]]
    assert [(r[1], float(r[3])) for r in ladder] == [(r["attack"], pytest.approx(r["accuracy"])) for r in single["ladder"]]


def test_study_writes_both_tables_and_skips_done_models(cifar, tmp_path, tiny) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    template = settings(model="", sweep=[0, 2])
    report = job.run_study(study, template, cifar, tmp_path / "study", "cpu")
    text = report.read_text()
    assert "Table 1" in text and "Table 2" in text and "across models" in text
    for said in (text, (tmp_path / "study" / "models" / "a" / "report.md").read_text()):  # which average each column is
        assert "average delta: the mean of the classes' deltas, each class drawn counting once" in said
        assert "overall: the accuracy over all samples, where a class weighs by its sample count" in said
    assert "average total drop: the mean of a model's classes' total drops" in text
    for name in ("ladder.csv", "sweep.csv", "across_models.csv", "figures/total_drops.png", "figures/a_sweep.png"):
        assert (tmp_path / "study" / name).is_file(), name
    done = tmp_path / "study" / "models" / "a" / "result.json"
    stamp = done.stat().st_mtime_ns
    job.run_study(study, template, cifar, tmp_path / "study", "cpu")
    assert done.stat().st_mtime_ns == stamp


def test_a_study_result_json_is_standard_json_and_a_rerun_reads_its_undefined_cells_back(cifar, tmp_path, tiny) -> None:
    """4 samples of 10 classes: most classes have no accuracy. result.json says null (not the token NaN, which strict
    JSON parsers refuse), and a rerun that reads the finished model back shows them as "–", as the run that made it."""
    def reject(token: str):
        raise ValueError(f"{token} is not JSON")

    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    template = settings(model="", ladder=["apgd-ce"], n=4, sweep=[0, 2])
    table = [line for line in job.run_study(study, template, cifar, tmp_path / "study", "cpu").read_text().splitlines() if line.startswith("| a |")]
    done = json.loads((tmp_path / "study" / "models" / "a" / "result.json").read_text(), parse_constant=reject)
    assert None in done["acc"][0] and any("| – |" in line for line in table)
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    again = job.run_study(study, template, cifar, tmp_path / "study", "cpu").read_text().splitlines()
    assert [line for line in again if line.startswith("| a |")] == table


def test_an_l2_study_labels_its_radii(cifar, tmp_path, tiny) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    text = job.run_study(study, settings(model="", ladder=["apgd-ce"], n=4, **L2), cifar, tmp_path / "study", "cpu").read_text()
    assert "ladder apgd-ce at ε = 0.5 (l2)" in text and "over ℓ2 radius ε in 0, 0.25, 0.5, 1" in text
    assert "Confusion under attack at ε = 1: a" in text and "/255" not in text
    assert (tmp_path / "study" / "sweep.csv").read_text().startswith("model,eps (l2 radius),")


def test_a_study_resumed_over_a_model_finished_before_eps_named_its_unit_keeps_one_eps_column(cifar, tmp_path, tiny) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    template = settings(model="", ladder=["apgd-ce"], n=4, sweep=[0, 2])
    job.run_study(study, template, cifar, tmp_path / "study", "cpu")
    done = tmp_path / "study" / "models" / "a" / "result.json"
    old = json.loads(done.read_text())
    for key in ("sweep", "summary"):
        old[key] = [{("eps" if k == "eps (x/255)" else k): v for k, v in row.items()} for row in old[key]]
    done.write_text(json.dumps(old))
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    job.run_study(study, template, cifar, tmp_path / "study", "cpu")
    for name in ("sweep.csv", "sweep_summary.csv"):
        header = (tmp_path / "study" / name).read_text().splitlines()[0].split(",")
        assert "eps (x/255)" in header and "eps" not in header, name


def _study_worker(rank: int, world: int, port: int, study: str, root: str, out: str, norm: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      WSOL_PROGRESS="0")
    torch.set_num_threads(1)
    job.load_eval_model = tiny_model
    job.run_study(Path(study), settings(**{"model": "", "sweep": [0, 2], **norm}), Path(root), Path(out), "cpu")
    from wsol.utils.distributed import cleanup

    cleanup()


@pytest.mark.parametrize("norm", [{}, L2], ids=["linf", "l2"])
def test_study_under_two_gloo_ranks_gives_the_tables_of_one_process(cifar, tmp_path, tiny, free_port, norm) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    job.run_study(study, settings(**{"model": "", "sweep": [0, 2], **norm}), cifar, tmp_path / "single", "cpu")
    mp.start_processes(_study_worker, args=(2, free_port, str(study), str(cifar), str(tmp_path / "sharded"), norm), nprocs=2, start_method="spawn")
    for name in ("sweep.csv", "sweep_summary.csv", "across_models.csv"):
        assert (tmp_path / "sharded" / name).read_text() == (tmp_path / "single" / name).read_text(), name


def test_study_names_models_by_label_and_classes_by_name(cifar, tmp_path, tiny) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: natural\n    checkpoint: n.safetensors\n  - name: art\n    checkpoint: a.safetensors\n")
    out = tmp_path / "study"
    job.run_study(study, settings(model="", n=8, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2]), cifar, out, "cpu")
    for label in ("natural", "art"):
        folder = out / "models" / label
        report = (folder / "report.md").read_text()
        assert report.splitlines()[0] == f"# Robustness of {label} on cifar10"
        for table in ("ladder_fp32.csv", "sweep_fp32.csv", "sweep_summary_fp32.csv"):
            assert {line.split(",")[0] for line in (folder / table).read_text().splitlines()[1:]} == {label}, table
        counts = [line for line in report.splitlines() if line.startswith("Samples per class: ")]
        assert len(counts) == 1 and counts[0].count(",") == len(NAMES) - 1
        per_class = (folder / "ladder_per_class_fp32.csv").read_text().splitlines()
        assert per_class[-1].startswith("n (samples),") and sum(int(v) for v in per_class[-1].split(",")[1:]) == 8
        assert counts[0] == "Samples per class: " + ", ".join(f"{n.decode()} {k}" for n, k in zip(NAMES, per_class[-1].split(",")[1:])) + "."
    names = [n.decode() for n in NAMES]
    header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[2:6] == [names[0], f"delta {names[0]}", names[1], f"delta {names[1]}"]
    assert not any(h.startswith("class ") for h in header)
    summary = (out / "sweep_summary.csv").read_text().splitlines()
    worst = summary[0].split(",").index("worst class")
    assert all(line.split(",")[worst] in names for line in summary[1:])
    assert [line.split(",")[0] for line in (out / "across_models.csv").read_text().splitlines()[1:]] == names
    assert counts[0] in (out / "report.md").read_text().splitlines()
    study_report = (out / "report.md").read_text().splitlines()
    assert "Budget per attack: apgd-ce 3 iterations, 1 restart." in study_report  # the settings' --n-iter 3 --n-restarts 1
    sweep_budget = study_report.index("Sweep budget per attack: apgd-ce 3 iterations, 1 restart.")  # under Table 2, not Table 1
    assert study_report.index("## Table 2: accuracy per class per ε, delta per step, total drop per class") < sweep_budget
    assert "Budget per attack: apgd-ce 3 iterations, 1 restart." in (out / "models" / "art" / "report.md").read_text()


def test_study_file_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: a\n    weigths: x.pt\n")
    with pytest.raises(ConfigError, match="use the keys"):
        job.read_study(bad)
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: n\n    checkpoint: n/model.safetensors\n  - name: r\n    model: Bai2023Improving_edm\n    weights: [a.pt, b.pt, c.pt]\n")
    models = job.read_study(good)
    assert models[0].model == "wsol-checkpoint" and models[0].weights == [str(tmp_path / "n/model.safetensors")]
    assert models[1].weights == [str(tmp_path / f) for f in ("a.pt", "b.pt", "c.pt")]
    bad.write_text("models:\n  - name: a\n    model: pyautoattack-resnet18\nladder: plus\nnorm: l2\n")
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) ladder, norm; .*\(ladder, norm, ε, sweep and n are command-line options\)"):
        job.read_study(bad)
    bad.write_text("models:\n  - name: natural\n")  # checkpoint: forgotten; it read as an unknown robust model 'natural'
    with pytest.raises(ConfigError, match=r"model natural: a name alone names no model; add checkpoint: FILE"):
        job.read_study(bad)
    bad.write_text("models:\n  - name: wang\n    weights: w.pt\n")  # model: forgotten
    with pytest.raises(ConfigError, match=r"model wang: weights without model: add model: NAME, the architecture they are for \(see `wsol models`\)"):
        job.read_study(bad)
    bad.write_text("models:\n  - name: pyautoattack-resnet18\n")  # the one model whose weights ship with its package
    assert job.read_study(bad)[0].model == "pyautoattack-resnet18"
    bad.write_text("models:\n  - name: a\n    checkpoint: n/model.safetensors\n  - name: b\n    checkpoint: ./n/../n/model.safetensors\n")
    with pytest.raises(ConfigError, match=r"same model and weights twice \(a and b\)"):
        job.read_study(bad)


def test_study_refuses_bf16_off_cuda_before_writing(cifar, tmp_path, tiny) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: any\n")
    with pytest.raises(ConfigError, match="--bf16"):
        job.run_study(study, settings(bf16=True), cifar, tmp_path / "out", "cpu")
    assert not (tmp_path / "out").exists()


def test_cli_runs_the_shipped_resnet18(tmp_path, capsys, monkeypatch) -> None:
    """The noise images are relabelled with the shipped model's own predictions: with the drawn labels its clean
    accuracy was 0, so APGD attacked no sample at all."""
    from wsol.models.robustbench import load_robust_model

    monkeypatch.setenv("WSOL_PROGRESS", "0")
    root = make_cifar(tmp_path / "cifar")
    path = root / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    images = torch.from_numpy(batch[b"data"]).float().view(-1, 3, 32, 32) / 255
    with torch.no_grad():
        batch[b"labels"] = load_robust_model("pyautoattack-resnet18")(images).argmax(1).tolist()
    path.write_bytes(pickle.dumps(batch))
    out = tmp_path / "r18"
    args = ["robustness", "evaluate", "--model", "pyautoattack-resnet18", "--dataset", "cifar10", "--root", str(root),
            "--attacks", "apgd-ce", "--n", "6", "--n-iter", "2", "--n-restarts", "1", "--batch-size", "6", "--device", "cpu", "--out", str(out)]
    assert run(args) == 0
    rows = (out / "ladder_fp32.csv").read_text().splitlines()
    assert rows[0] == "model,attack,minutes,accuracy,delta,n,95% CI low,95% CI high" and rows[1].startswith("pyautoattack-resnet18,initial accuracy,")
    assert rows[2].startswith("pyautoattack-resnet18,apgd-ce,")
    assert float(rows[1].split(",")[3]) == 1.0 and float(rows[2].split(",")[3]) < 1.0  # it attacked and broke some
    assert "report:" in capsys.readouterr().out


def test_n_queries_sets_squares_budget(cifar, tmp_path, tiny, monkeypatch) -> None:
    import wsol.attacks.autoattack as aa_module

    budgets = []
    build = aa_module.build_autoattack

    def spy(*args, **kwargs):
        aa = build(*args, **kwargs)
        budgets.append(aa.square.n_queries)
        return aa

    monkeypatch.setattr(aa_module, "build_autoattack", spy)
    args = ["robustness", "evaluate", "--model", "any", "--dataset", "cifar10", "--root", str(cifar), "--attacks", "square",
            "--n", "4", "--n-queries", "3", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "sq")]
    assert run(args) == 0
    assert budgets and set(budgets) == {3}


# session 6: robustness QA


def test_study_loads_each_model_once_and_finished_ones_never(cifar, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    loads = []
    monkeypatch.setattr(job, "load_eval_model", lambda name, weights, device: loads.append(weights) or tiny_model())
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    checkpoint: a.safetensors\n")
    template = settings(model="", n=8, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2])
    job.run_study(study, template, cifar, tmp_path / "study", "cpu")
    assert loads == [[str(tmp_path / "a.safetensors")]]
    study.write_text("models:\n  - name: a\n    checkpoint: a.safetensors\n  - name: b c\n    checkpoint: b.safetensors\n")
    loads.clear()
    report = job.run_study(study, template, cifar, tmp_path / "study", "cpu").read_text()
    assert loads == [[str(tmp_path / "b.safetensors")]]
    assert "No sample is classified correctly" not in report
    assert "| a |" in report and "| b c |" in report and "](<figures/b c_sweep.png>)" in report
    loads.clear()
    with pytest.raises(ConfigError, match=r"other arguments for model a \(n was \d+, now \d+\); use another --out"):
        job.run_study(study, settings(model="", n=6, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2]), cifar, tmp_path / "study", "cpu")
    assert loads == []


class SizedClassifier(MeanClassifier):
    """The tiny model with an input size, as the registry's models have, so a study reads the split at that size."""

    input_size = 32


def test_study_reads_the_test_split_once_per_input_size(cifar, tmp_path, monkeypatch) -> None:
    """Not once for the sample count, once per model for the up-front check and again per model for its run."""
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    monkeypatch.setattr(job, "load_eval_model", lambda name, weights, device: (SizedClassifier() if name == "sized" else MeanClassifier()).eval())
    reads, real = [], job.test_split
    monkeypatch.setattr(job, "test_split", lambda dataset, root, size=None, options=None: reads.append(size) or real(dataset, root, size, options))
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: t1\n  - name: b\n    model: t2\n  - name: c\n    model: sized\n")
    job.run_study(study, settings(model="", n=4, batch_size=4, ladder=["apgd-ce"], sweep=[0, 2]), cifar, tmp_path / "study", "cpu")
    assert sorted(reads, key=str) == [32, None]


def test_the_model_check_splits_the_sweep_attacks_by_the_ladder_rule() -> None:
    """``--attack 'apgd-ce, APGD-T'`` is apgd-ce and apgd-t, as the attack itself reads it: apgd-t needs 4 classes."""
    with pytest.raises(ConfigError, match="apgd-t needs at least 4 classes"):
        job.check_model_fits(nn.Linear(3072, 2), torch.zeros(1, 3072), ["a", "b"], "m", settings(ladder=[], sweep_attack="apgd-ce, APGD-T"))


def test_a_study_path_written_from_the_working_folder_is_explained(tmp_path, monkeypatch) -> None:
    """configs/models.yaml naming runs/a/model.safetensors (as seen from the working folder): the error says paths are
    relative to the file, not only 'checkpoint not found: configs/runs/...'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "model.safetensors").write_bytes(b"")
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "models.yaml"
    path.write_text("models:\n  - name: a\n    checkpoint: runs/a/model.safetensors\n")
    with pytest.raises(ConfigError, match="relative to its folder.*write .*runs/a/model.safetensors"):
        job.read_study(path)
    path.write_text("models:\n  - name: a\n    checkpoint: ../runs/a/model.safetensors\n")
    assert job.read_study(path)[0].weights == [str(tmp_path / "configs" / ".." / "runs" / "a" / "model.safetensors")]


def test_study_file_mistakes_a_tired_user_makes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "s.yaml"
    path.write_text("models:\n  - name: a\n    checkpoint: ~/runs/a.safetensors\n")
    assert job.read_study(path)[0].weights == [str(tmp_path / "home" / "runs" / "a.safetensors")]
    for text, message in [("  - name: a\n    model: r18\n    weight: x.pt\n", "unknown key.*weight;"),
                          ("  - name: a\n    checkpoint: a.safetensors\n    model: r18\n", "either a checkpoint or model and weights"),
                          ("  - name:\n    checkpoint: a.safetensors\n", "give it a name"),
                          ("  - name: a\n    checkpoint: ''\n", "model a: its checkpoint path is empty; give the file's path"),
                          ("  - name: a\n    model: r18\n    weights: [a.pt, ' ']\n", "model a: an empty path among its weights"),
                          ("  - name: a\n    checkpoint: a.safetensors\n   - name: b\n", "not valid YAML: expected <block end>, but found .* at line 4, column 4$")]:
        path.write_text("models:\n" + text)
        with pytest.raises(ConfigError, match=message):
            job.read_study(path)


def test_a_study_folder_given_as_the_study_file_names_the_yaml_in_it(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"study file .* is a folder; pass the YAML file that lists the models$"):
        job.read_study(tmp_path)
    (tmp_path / "models.yaml").write_text("models: []\n")
    with pytest.raises(ConfigError, match=rf"is a folder; .*, e.g. {tmp_path / 'models.yaml'}$"):
        job.read_study(tmp_path)


def test_study_models_named_alike_but_for_case_are_refused(tmp_path) -> None:
    """models/A and models/a are one folder on macOS and Windows: the second model would find the first one's run there."""
    path = tmp_path / "s.yaml"
    path.write_text("models:\n  - name: WRN\n    checkpoint: a.safetensors\n  - name: wrn\n    checkpoint: b.safetensors\n")
    with pytest.raises(ConfigError, match=r"names two models alike but for case \(WRN and wrn\)"):
        job.read_study(path)


def test_study_model_named_by_a_number_is_refused_with_the_quoted_form(tmp_path) -> None:
    """An unquoted number as a name is YAML's number, not the text written (010 is 8, 1.50 is 1.5), and names become
    folders and table rows: refused with the quoting that keeps the text; a quoted number is a name like any other."""
    path = tmp_path / "s.yaml"
    for written, read in (("1", "1"), ("010", "8"), ("1.50", "1.5"), ("yes", "True"), ("2024-01-02", "2024-01-02")):
        path.write_text(f"models:\n  - name: {written}\n    checkpoint: a.safetensors\n")
        with pytest.raises(ConfigError, match=rf"model 1: YAML reads its name as an? [\w/ ]+ \({read}\), not as the text written; .*quote it"):
            job.read_study(path)
    path.write_text("models:\n  - name: '010'\n    checkpoint: a.safetensors\n  - name: \"1\"\n    checkpoint: b.safetensors\n")
    assert [m.label for m in job.read_study(path)] == ["010", "1"]


class AlwaysWrong(nn.Module):
    """The mean classifier with its classes shifted by one: every sample is misclassified."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MeanClassifier()(x).roll(1, dims=1)


def test_report_explains_zero_clean_accuracy_and_absent_classes(cifar, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    monkeypatch.setattr(job, "load_eval_model", lambda *a, **k: AlwaysWrong().eval())
    s = settings(model="wsol-checkpoint", weights=[str(tmp_path / "runs" / "my_net" / "model.safetensors")], n=5, pgd_steps=2)
    result = job.evaluate_robustness(s, cifar, tmp_path / "r", "cpu")
    report = (tmp_path / "r" / "report.md").read_text()
    assert report.splitlines()[0] == "# Robustness of my_net on cifar10"
    assert report.splitlines()[2].startswith(f"Checkpoint {s.weights[0]}. 5 test samples")
    absent = [f"c{c}" for c in range(10) if c not in result["labels"].tolist()]
    assert absent and f"–: no test sample of {', '.join(absent)} among the 5 drawn" in report
    assert "No sample is classified correctly without attack" in report
    import csv

    with open(tmp_path / "r" / "pgd_fp32.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert "worst-class accuracy" in row and float(row["eps (x/255)"]) == pytest.approx(2.0)  # was "eps", 0.00784 unlabelled
    per_class = (tmp_path / "r" / "ladder_per_class_fp32.csv").read_text().splitlines()
    column = per_class[0].split(",").index(absent[0])
    assert [line.split(",")[column] for line in per_class[1:]] == ["", "", "0"]  # no accuracy of an absent class: an empty cell
    assert not any("nan" in p.read_text() for p in (tmp_path / "r").glob("*.csv"))
    monkeypatch.setattr(job, "load_eval_model", tiny_model)
    job.evaluate_robustness(settings(n=24, batch_size=24), cifar, tmp_path / "fine", "cpu")
    text = (tmp_path / "fine" / "report.md").read_text()
    assert "–: no test sample" not in text and "classified correctly" not in text
    assert job.MINUTES_NOTE in text and "Confusion at ε = 4/255 (clean-correct samples; row: true class" in text
    assert "## AutoAttack ladder (fp32, ε = 2/255, linf)" in text


def test_a_worst_class_tied_with_others_says_so_in_the_reports(cifar, tmp_path, monkeypatch) -> None:
    """A model wrong on every sample has all its classes drawn at 0: the worst class the tables name (the first) is one of
    k + 1 equals, and the Markdown says '(+k tied)' with a note; the CSV keeps the class name alone."""
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    monkeypatch.setattr(job, "load_eval_model", lambda *a, **k: AlwaysWrong().eval())
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: bad\n    model: bad\n")
    text = job.run_study(study, settings(model="", n=6, batch_size=6, ladder=["apgd-ce"], sweep=[0, 1]), cifar, tmp_path / "s", "cpu").read_text()
    labels = json.loads((tmp_path / "s" / "models" / "bad" / "result.json").read_text())["labels"]
    first, others = f"c{min(labels)}", len(set(labels)) - 1
    assert others > 0
    for said in (text, (tmp_path / "s" / "models" / "bad" / "report.md").read_text()):
        assert f"| bad | 1 | 0.000 | {first} (+{others} tied) | 0.000 |" in said and job.TIES_NOTE in said
    assert f"| bad | 0.000 | {first} (+{others} tied) | 0.000 |" in text
    assert (tmp_path / "s" / "sweep_summary.csv").read_text().splitlines()[2].split(",")[3] == first


def test_the_demo_section_marks_a_tied_worst_class_too(tmp_path, monkeypatch) -> None:
    acc = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    summary = summary_rows("natural", [0, 4], acc, class_names=["a", "b", "c"], eps_column="eps (x/255)")
    monkeypatch.setattr(job, "test_split", lambda *a, **k: range(64))
    monkeypatch.setattr(job, "evaluate_robustness", lambda *a, **k: {"sweep-fp32": {"acc": acc, "summary": summary}, "class_names": ["a", "b", "c"]})
    text = "\n".join(job.demo_robustness({"natural": tmp_path / "m.safetensors"}, tmp_path, tmp_path / "robustness"))
    assert "| natural | 0 | 0.167 | b (+1 tied) |" in text and "| natural | 4 | 0.000 | a (+2 tied) |" in text and job.TIES_NOTE in text


@pytest.mark.parametrize("option", [{"pgd_loss": "cw"}, {"pgd_restarts": 3}])
def test_pgd_options_without_pgd_are_refused(option) -> None:
    """--pgd-loss / --pgd-restarts without --pgd K changed nothing, yet a rerun that changed only them was refused."""
    with pytest.raises(ConfigError, match="add --pgd or drop them"):
        settings(pgd_steps=0, **option).validate()
    settings(pgd_steps=3, **option).validate()


def test_pgd_margin_loss_l2_and_restarts_reach_the_attack(cifar, tmp_path, tiny, monkeypatch) -> None:
    """Also: --norm takes RobustBench's spelling, L2."""
    calls = []
    real = job.pgd_evaluate
    monkeypatch.setattr(job, "pgd_evaluate", lambda *a, **k: calls.append(k) or real(*a, **k))
    args = ["robustness", "evaluate", "--model", "any", "--dataset", "cifar10", "--root", str(cifar), "--attacks", "apgd-ce", "--n", "4",
            "--n-iter", "2", "--pgd", "3", "--pgd-loss", "cw", "--pgd-restarts", "2", "--norm", "L2", "--eps", "1.0", "--batch-size", "4",
            "--device", "cpu", "--out", str(tmp_path / "p")]
    assert run(args) == 0
    assert [(k["loss"], k["norm"], k["restarts"], k["eps"]) for k in calls] == [("cw", "l2", 2, 1.0)]
    pgd = next(csv.DictReader(open(tmp_path / "p" / "pgd_fp32.csv", newline="")))
    assert (pgd["attack"], pgd["norm"], pgd["loss"], pgd["restarts"]) == ("PGD-3", "l2", "cw", "2")
    assert "| eps (l2 radius) |" in (tmp_path / "p" / "report.md").read_text()


def _wilson(successes: int, n: int) -> tuple:
    """The 95% Wilson score interval in closed form, written apart from wsol's (z = Φ⁻¹(0.975))."""
    z, p = 1.959963984540054, successes / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


INTERVAL_OF = {"95% CI": ("accuracy", "n"), "robust 95% CI": ("robust accuracy", "n"), "worst-class 95% CI": ("worst-class accuracy", "worst-class n")}
"""Each interval column of the robustness CSVs: the accuracy it is of and the sample count it is over."""


def _read_back(path: Path) -> list:
    """A CSV as a script reads it: csv.DictReader, and numpy.genfromtxt, which must take it (one record per row, one number
    a numeric cell) and agree on the row count."""
    rows = list(csv.DictReader(open(path, newline="")))
    table = np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding=None))
    assert len(table) == len(rows), path
    for name in rows[0]:
        if name.endswith(" CI low") or name.endswith(" CI high"):  # numbers, not text
            column = table.dtype.names[list(rows[0]).index(name)]
            assert table.dtype[column].kind == "f", (path, name)
    return rows


def _check_intervals(path: Path, rows: list) -> int:
    """Every interval column of ``rows`` is [low, high] of the Wilson interval of its accuracy, at full precision."""
    checked = 0
    for name in [c[: -len(" low")] for c in rows[0] if c.endswith(" CI low")]:
        accuracy, n = INTERVAL_OF[name]
        for row in rows:
            count = int(row[n])
            expected = _wilson(round(float(row[accuracy]) * count), count)
            assert (float(row[f"{name} low"]), float(row[f"{name} high"])) == pytest.approx(expected, rel=1e-12, abs=1e-15), (path, name)
            checked += 1
    return checked


def test_every_robustness_csv_is_one_numeric_record_per_row(cifar, tmp_path, tiny) -> None:
    """The intervals were text ("[0.028, 0.301]": rounded to 3 decimals, to be parsed, split in two by genfromtxt at its
    comma), the PGD row's attack cell held commas, and the sweep tables ended each model with a TOTAL row whose ε cell is
    text (genfromtxt failed). Now every CSV is one record per row with its intervals as two numeric columns; the
    Markdown tables still show [low, high] and the TOTAL row."""
    run_folder = tmp_path / "r"
    job.evaluate_robustness(settings(pgd_steps=1, sweep=[0, 1, 2]), cifar, run_folder, "cpu")
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    job.run_study(study, settings(model="", ladder=["apgd-ce"], sweep=[0, 2]), cifar, tmp_path / "study", "cpu")
    files = [*sorted(run_folder.glob("*.csv")), *sorted((tmp_path / "study").glob("*.csv"))]
    assert {"ladder_fp32.csv", "pgd_fp32.csv", "sweep_fp32.csv", "sweep_total_fp32.csv", "sweep_summary_fp32.csv", "ladder.csv",
            "sweep.csv", "sweep_summary.csv", "per_model.csv", "across_models.csv"} <= {p.name for p in files}
    read = {path: _read_back(path) for path in files}
    assert sum(_check_intervals(path, rows) for path, rows in read.items()) > 0
    assert all(not any(c.endswith(" CI") for c in rows[0]) for rows in read.values())  # no interval left as one text cell

    sweep, total = read[run_folder / "sweep_fp32.csv"], read[run_folder / "sweep_total_fp32.csv"]
    assert [float(r["eps (x/255)"]) for r in sweep] == [0, 1, 2] and len(total) == 1
    assert float(total[0]["overall"]) == pytest.approx(float(sweep[-1]["overall"]) - float(sweep[0]["overall"]))
    for name in (n.decode() for n in NAMES):
        if sweep[0][name]:
            assert float(total[0][f"delta {name}"]) == pytest.approx(float(sweep[-1][name]) - float(sweep[0][name]))
    report = (run_folder / "report.md").read_text()
    assert re.search(r"^\| tiny \| TOTAL \|", report, flags=re.M)
    ladder = read[run_folder / "ladder_fp32.csv"][-1]
    assert f"| {float(ladder['accuracy']):.4f} |" in report and f"[{float(ladder['95% CI low']):.4f}, {float(ladder['95% CI high']):.4f}] |" in report
    pgd = read[run_folder / "pgd_fp32.csv"][0]
    assert (pgd["attack"], pgd["norm"], pgd["loss"], pgd["restarts"]) == ("PGD-1", "linf", "ce", "1")

    by_model = {m: [r for r in read[tmp_path / "study" / "sweep.csv"] if r["model"] == m] for m in ("a", "b")}
    assert all([float(r["eps (x/255)"]) for r in rows] == [0, 2] for rows in by_model.values())
    for row in read[tmp_path / "study" / "per_model.csv"]:
        rows = by_model[row["model"]]
        assert float(row["overall total drop"]) == pytest.approx(float(rows[-1]["overall"]) - float(rows[0]["overall"]))
    assert len(re.findall(r"^\| [ab] \| TOTAL \|", (tmp_path / "study" / "report.md").read_text(), flags=re.M)) == 2


def test_a_study_reads_a_result_json_of_an_older_wsol_with_text_intervals_and_a_total_row(cifar, tmp_path, tiny) -> None:
    """A model finished by an older wsol kept its intervals as text and its sweep rows with the TOTAL row: the study's
    tables made from it are those of a model finished now."""
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    template = settings(model="", ladder=["apgd-ce"], n=8, sweep=[0, 2])
    out = tmp_path / "study"
    job.run_study(study, template, cifar, out, "cpu")
    tables = {p.name: p.read_text() for p in out.glob("*.csv")}
    done = out / "models" / "a" / "result.json"
    old = json.loads(done.read_text())
    for key, column in (("ladder", "95% CI"), ("summary", "worst-class 95% CI")):
        old[key] = [{**row, column: "[{:.3f}, {:.3f}]".format(*row[column])} for row in old[key]]
    old["sweep"].append({**{k: None for k in old["sweep"][0]}, "model": "a", "eps (x/255)": "TOTAL"})
    done.write_text(json.dumps(old))
    job.run_study(study, template, cifar, out, "cpu")
    assert {p.name: p.read_text() for p in out.glob("*.csv")} == tables


def test_results_of_weights_rewritten_since_are_dropped_not_reported(cifar, tmp_path, monkeypatch, capsys) -> None:
    """A model retrained into the same file: the folder's chunks are the old model's. Reported as the new model's they
    were a wrong table (the rerun attacked nothing); the run starts over instead, with a note, and a study reruns that model."""
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"right")
    monkeypatch.setattr(job, "load_eval_model", lambda *a: (MeanClassifier() if weights.read_bytes() == b"right" else AlwaysWrong()).eval())
    s = settings(model="m", weights=[str(weights)], n=8, batch_size=4, ladder=["apgd-ce"], sweep=[])
    assert job.evaluate_robustness(s, cifar, tmp_path / "r", "cpu")["ladder-fp32"]["rows"][0]["accuracy"] > 0
    capsys.readouterr()
    weights.write_bytes(b"wrong")
    assert job.evaluate_robustness(s, cifar, tmp_path / "r", "cpu")["ladder-fp32"]["rows"][0]["accuracy"] == 0
    assert f"note: {tmp_path / 'r'} holds results of an earlier version of {weights} (rewritten since): starting over" in capsys.readouterr().err
    assert job.evaluate_robustness(s, cifar, tmp_path / "r", "cpu")["ladder-fp32"]["rows"][0]["accuracy"] == 0  # and resumes as usual
    assert "starting over" not in capsys.readouterr().err
    weights.write_bytes(b"right")
    with pytest.raises(ConfigError, match=r"other arguments \(n was 8, now 12\); use another --out"):  # the digest is no argument to name
        job.evaluate_robustness(replace(s, n=12), cifar, tmp_path / "r", "cpu")
    weights.write_bytes(b"wrong")
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: m\n    weights: model.pt\n")
    template = settings(model="", n=8, batch_size=4, ladder=["apgd-ce"], sweep=[0, 2])
    job.run_study(study, template, cifar, tmp_path / "s", "cpu")
    weights.write_bytes(b"right")
    report = job.run_study(study, template, cifar, tmp_path / "s", "cpu").read_text()
    assert "done before, skipped" not in capsys.readouterr().err
    assert "No sample is classified correctly without attack" not in report


def test_a_study_model_given_other_weights_says_how_to_redo_only_it(cifar, tmp_path, tiny) -> None:
    """The YAML now points a finished model's name at other weights: its folder alone is in the way, and the error says
    so; other study arguments (--n) concern every model and keep the plain advice."""
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(name.encode())
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: m\n    model: x\n    weights: a.pt\n")
    template = settings(model="", n=8, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2])
    job.run_study(study, template, cifar, tmp_path / "s", "cpu")
    study.write_text("models:\n  - name: m\n    model: x\n    weights: b.pt\n")
    with pytest.raises(ConfigError, match=rf"other arguments for model m \(weights was …\S*/a.pt, now …\S*/b.pt\); give it another name, or delete {tmp_path / 's' / 'models' / 'm'} to redo it$"):
        job.run_study(study, template, cifar, tmp_path / "s", "cpu")
    study.write_text("models:\n  - name: m\n    model: x\n    weights: a.pt\n")
    with pytest.raises(ConfigError, match=r"other arguments for model m \(n was 8, now 6\); use another --out or the same arguments$"):
        job.run_study(study, settings(model="", n=6, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2]), cifar, tmp_path / "s", "cpu")


def test_a_study_model_run_with_other_budgets_says_the_same_arguments_cannot_resume_it(cifar, tmp_path, tiny) -> None:
    """Budgets alone differ (the same options ran other iterations before): the advice of other arguments would not help."""
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: m\n    model: x\n")
    template = settings(model="", n=8, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2])
    job.run_study(study, template, cifar, tmp_path / "s", "cpu")
    path = tmp_path / "s" / "models" / "m" / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "sweep_budgets": {"apgd-ce": "9 iterations, 1 restart"}}))
    with pytest.raises(ConfigError, match=r"other arguments for model m \(sweep_budgets: its attacks ran with other iterations, restarts or queries\); "
                                          rf"the same arguments cannot resume it: use another --out, or delete {tmp_path / 's' / 'models' / 'm'} to redo it$"):
        job.run_study(study, template, cifar, tmp_path / "s", "cpu")
    with pytest.raises(ConfigError, match=r"other arguments for model m \(n was 8, now 6; sweep_budgets\); use another --out or the same arguments$"):
        job.run_study(study, replace(template, n=6), cifar, tmp_path / "s", "cpu")


def test_study_report_names_a_model_with_clean_accuracy_zero(cifar, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    monkeypatch.setattr(job, "load_eval_model", lambda name, *a: (AlwaysWrong() if name == "wrong" else MeanClassifier()).eval())
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: good\n    model: fine\n  - name: bad\n    model: wrong\n")
    report = job.run_study(study, settings(model="", n=8, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2]), cifar, tmp_path / "s", "cpu").read_text()
    assert "No sample is classified correctly without attack by bad," in report and "by good" not in report


def test_the_default_n_and_the_same_n_typed_out_are_one_run(cifar, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    loads = []
    monkeypatch.setattr(job, "load_eval_model", lambda *a: loads.append(a) or tiny_model())
    job.evaluate_robustness(settings(n=None, batch_size=8), cifar, tmp_path / "r", "cpu")  # the whole split: 24 < DEFAULT_N
    lines = (tmp_path / "r" / "ladder-fp32.rank0.jsonl").read_text()
    job.evaluate_robustness(settings(n=24, batch_size=8), cifar, tmp_path / "r", "cpu")
    assert (tmp_path / "r" / "ladder-fp32.rank0.jsonl").read_text() == lines
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    template = dict(model="", batch_size=24, ladder=["apgd-ce"], sweep=[0, 2])
    job.run_study(study, settings(n=24, **template), cifar, tmp_path / "s", "cpu")
    loads.clear()
    job.run_study(study, settings(n=None, **template), cifar, tmp_path / "s", "cpu")
    assert loads == []


def test_a_checkpoint_of_another_dataset_with_as_many_classes_is_refused(cifar, tmp_path, capsys, monkeypatch) -> None:
    """A 10-class shapes model on cifar10 passes the class-count check; its sidecar says it was trained on shapes, whose
    class names are not cifar10's: one error before anything is written (it was a note, then a run of meaningless numbers)."""
    from wsol.models import build_model, save_model
    from wsol.data.shapes import shapes_class_names

    monkeypatch.setenv("WSOL_PROGRESS", "0")
    model = build_model("small-cnn", 10, input_size=32)
    args = ["robustness", "per-class", "--dataset", "cifar10", "--root", str(cifar), "--eps-sweep", "0:1", "--n", "4", "--n-iter", "1",
            "--n-restarts", "1", "--device", "cpu"]
    other = save_model(model, tmp_path / "shapes", dataset="shapes", class_names=shapes_class_names(10))
    assert run([*args, "--checkpoint", str(other), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: checkpoint ") and "was trained on shapes with classes disc, square, triangle, ..." in err
    assert "but cifar10 has c0, c1, c2, ...: its accuracies there would mean nothing; pass a checkpoint trained on cifar10, or --dataset shapes" in err
    assert not (tmp_path / "a").exists()
    unrecorded = save_model(model, tmp_path / "unrecorded", class_names=shapes_class_names(10))  # no dataset recorded: a note
    assert run([*args, "--checkpoint", str(unrecorded), "--out", str(tmp_path / "c")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "was trained on another dataset with classes disc, square" in notes[0] and "mean nothing" in notes[0]
    same = save_model(model, tmp_path / "cifar", dataset="cifar10", class_names=[n.decode() for n in NAMES])
    assert run([*args, "--checkpoint", str(same), "--out", str(tmp_path / "b")]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_study_refuses_a_checkpoint_of_another_dataset_before_its_first_model(cifar, tmp_path, tiny, capsys) -> None:
    from wsol.models import build_model, save_model
    from wsol.data.shapes import shapes_class_names

    other = save_model(build_model("small-cnn", 10, input_size=32), tmp_path / "shapes", dataset="shapes", class_names=shapes_class_names(10))
    study = tmp_path / "study.yaml"
    study.write_text(f"models:\n  - name: a\n    model: tiny\n  - name: b\n    checkpoint: {other}\n")
    with pytest.raises(ConfigError, match="was trained on shapes .* pass a checkpoint trained on cifar10"):
        job.run_study(study, settings(ladder=["apgd-ce"], sweep=[0, 1]), cifar, tmp_path / "s", "cpu")
    assert not (tmp_path / "s" / "models").exists()


class FourClasses(nn.Module):
    """A model of another dataset: four logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4]


def test_study_refuses_a_model_of_another_class_count_before_the_first_model_runs(cifar, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    monkeypatch.setattr(job, "load_eval_model", lambda name, *a: (FourClasses() if name == "cub" else MeanClassifier()).eval())
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: good\n    model: fine\n  - name: other\n    model: cub\n")
    with pytest.raises(WsolError, match="model other has 4 classes but dataset cifar10 has 10"):
        job.run_study(study, settings(model="", n=8, batch_size=8, ladder=["apgd-ce"], sweep=[0, 2]), cifar, tmp_path / "s", "cpu")
    assert not (tmp_path / "s").exists()


class LinearClassifier(nn.Module):
    """A seeded linear layer on 8×8-pooled images: bf16 autocast changes its logits (a matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(10, 192, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 8).flatten(1))


def test_bf16_is_run_and_reported_beside_fp32(cifar, tmp_path, monkeypatch) -> None:
    """The --bf16 path (CUDA-only from the CLI) run on the CPU's bf16 autocast: both precisions get their tables,
    files and report sections, and bf16 really changes the model's arithmetic."""
    monkeypatch.setattr(job, "load_eval_model", lambda *a, **k: LinearClassifier().eval())
    monkeypatch.setattr(job, "_run_device", lambda s, device: torch.device("cpu"))
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    out = tmp_path / "bf16"
    result = job.evaluate_robustness(settings(bf16=True, ladder=["apgd-ce"]), cifar, out, "cpu")
    for kind in ("ladder", "sweep"):
        fp32, bf16 = result[f"{kind}-fp32"]["rows"], result[f"{kind}-bf16"]["rows"]
        assert len(fp32) == len(bf16) > 0 and (out / f"{kind}-bf16.rank0.jsonl").is_file()
    assert "(bf16)" in (out / "report.md").read_text()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = LinearClassifier().eval()
    assert not torch.equal(job._Autocast(model)(x), model(x))


def test_bf16_runs_a_channels_last_copy_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    wrapped = job._Autocast(model)
    assert wrapped.model is not model and wrapped.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model[0].weight.is_contiguous()  # the fp32 run keeps its own layout
    logits = wrapped(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, model(x), rtol=0.05, atol=0.05)  # bf16 rounding only
    (grad,) = torch.autograd.grad(logits.sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_a_chunk_reports_each_attack_and_each_eps_as_it_starts(cifar, tmp_path, tiny, monkeypatch, capsys) -> None:
    """One chunk of --batch-size samples runs minutes on a CPU: in a log, each ladder attack and each sweep ε gets one
    line on stderr (what runs, on how many points, how long the step before took); stdout keeps the tables only."""
    monkeypatch.delenv("WSOL_PROGRESS")
    args = ["robustness", "evaluate", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--attacks", "apgd-ce,apgd-dlr",
            "--n", "4", "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert run(args) == 0
    captured = capsys.readouterr()
    steps = [line for line in captured.err.splitlines() if " chunk 1/1: " in line]
    assert [line.split(": ")[1].split(" on ")[0] for line in steps] == ["apgd-ce at ε 8/255", "apgd-dlr at ε 8/255"]
    assert steps[0].endswith(" of 4 points") and "(last step " in steps[1] and "\r" not in captured.err
    assert "chunk 1/1" not in captured.out
    sweep = ["robustness", "per-class", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--eps-sweep", "0,1,2",
             "--n", "4", "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "s")]
    assert run(sweep) == 0
    steps = [line.split(": ")[1].split(" on ")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("sweep-fp32 chunk 1/1: ")]
    assert steps == ["apgd-ce at ε 1/255", "apgd-ce at ε 2/255"]  # ε = 0 attacks nothing and gets no line
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    assert run([*sweep[:-1], str(tmp_path / "quiet")]) == 0
    assert "chunk 1/1" not in capsys.readouterr().err


# session 8: budget options no attack of the run uses


@pytest.mark.parametrize("kw, expected", [
    (dict(ladder=["apgd-ce"], sweep=[], n_queries=5), "--n-queries (used by square) has no effect with the attacks apgd-ce"),
    (dict(ladder=["fab-t"], sweep=[], n_iter=None, n_restarts=2), "--n-restarts (used by apgd-ce, apgd-dlr, apgd-t, fab, square) has"),
    (dict(ladder=["square"], sweep=[], n_restarts=None), "--n-iter (used by apgd-ce, apgd-dlr, apgd-t, fab, fab-t) has no effect"),
    (dict(ladder=[], sweep=[], pgd_steps=3, n_queries=5), "and --n-queries (used by square) have no effect with --pgd alone"),
    (dict(ladder=["apgd-ce"], sweep=[0, 1], sweep_attack="square", n_queries=5), None),
    (dict(ladder=["apgd-ce", "fab-t"], sweep=[]), None),
    (dict(ladder=["apgd-ce", "square"], sweep=[], n_restarts=None), "--n-iter does not change square: Square's budget is its query count, --n-queries"),
    (dict(ladder=[], sweep=[0, 1], sweep_attack="apgd-ce,square", n_restarts=None), "--n-iter does not change square"),
    (dict(ladder=["apgd-ce", "square"], sweep=[], n_restarts=None, n_queries=50), None),
    (dict(ladder=["square"], sweep=[], n_restarts=None, n_queries=50), "--n-iter (used by apgd-ce, apgd-dlr, apgd-t, fab, fab-t) has no effect"),
])
def test_budget_options_no_attack_uses_are_named(kw, expected) -> None:
    text = job.unused_options_note(settings(**kw).validate())
    assert text is None if expected is None else expected in text


def test_an_unused_budget_option_is_one_note_after_the_checks(cifar, tmp_path, tiny, capsys) -> None:
    base = ["robustness", "evaluate", "--model", "any", "--dataset", "cifar10", "--root", str(cifar), "--attacks", "apgd-ce", "--n", "4",
            "--n-iter", "1", "--n-queries", "3", "--batch-size", "4", "--device", "cpu"]
    assert run([*base, "--out", str(tmp_path / "a")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == ["note: --n-queries (used by square) has no effect with the attacks apgd-ce"]
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.jsonl").write_text("{}\n")
    assert run([*base, "--out", str(tmp_path / "train")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


def test_a_study_notes_an_unused_budget_option_once(cifar, tmp_path, tiny, capsys) -> None:
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    job.run_study(study, settings(model="", sweep=[0, 2], n_queries=7).validate(), cifar, tmp_path / "study", "cpu")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == ["note: --n-queries (used by square) has no effect with the attacks apgd-ce, apgd-dlr"]


def _killed(*args, **kwargs):
    raise KeyboardInterrupt


def _run_of_a_model_rewritten_since(cifar: Path, tmp_path: Path, monkeypatch) -> tuple:
    """A finished run (report, tables, figures) in ``tmp_path / 'r'`` of weights rewritten since: (its settings, the folder)."""
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"old")
    monkeypatch.setattr(job, "load_eval_model", lambda *a: MeanClassifier().eval())
    s = settings(model="m", weights=[str(weights)], n=8, batch_size=4, ladder=["apgd-ce"], sweep=[0, 1])
    out = tmp_path / "r"
    job.evaluate_robustness(s, cifar, out, "cpu")
    assert (out / "report.md").is_file() and list(out.glob("*.csv")) and (out / "figures").is_dir()
    weights.write_bytes(b"new")
    return s, out


def test_starting_over_for_rewritten_weights_drops_the_old_report_before_attacking(cifar, tmp_path, monkeypatch) -> None:
    """A kill between the start-over and the new report left the old model's report.md, tables and figures beside the
    new model's results, readable as its own."""
    s, out = _run_of_a_model_rewritten_since(cifar, tmp_path, monkeypatch)
    monkeypatch.setattr(job, "run_chunks", _killed)
    with pytest.raises(KeyboardInterrupt):
        job.evaluate_robustness(s, cifar, out, "cpu")
    assert not (out / "report.md").exists() and not list(out.glob("*.csv")) and not (out / "figures").exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["run.json"]  # whatever the report writes goes


def test_a_start_over_killed_while_dropping_the_figures_starts_over_again(cifar, tmp_path, monkeypatch) -> None:
    """The start-over removed the chunks before the figures: a kill in between left the old model's figures, and the rerun,
    finding no chunk, did not start over, so they stayed beside the new model's results. The chunks now go last."""
    import wsol.utils.io as io

    s, out = _run_of_a_model_rewritten_since(cifar, tmp_path, monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(io, "temp_dir_beside", _killed)  # the figures folder is renamed aside first
        with pytest.raises(KeyboardInterrupt):
            job.evaluate_robustness(s, cifar, out, "cpu")
    assert (out / "figures").is_dir()
    monkeypatch.setattr(job, "run_chunks", _killed)
    with pytest.raises(KeyboardInterrupt):
        job.evaluate_robustness(s, cifar, out, "cpu")
    assert not (out / "figures").exists() and not list(out.glob("*.rank*.jsonl"))


def test_study_compares_each_model_with_the_first_on_the_same_samples(cifar, tmp_path, monkeypatch) -> None:
    """McNemar's exact test at the largest ε: the mean classifier keeps samples the always-wrong one never has; the
    section survives a rerun that skips both, and a model finished before the per-sample results were kept is left out."""
    from scipy.stats import binomtest

    monkeypatch.setenv("WSOL_PROGRESS", "0")
    monkeypatch.setattr(job, "load_eval_model", lambda name, *a: (MeanClassifier() if name == "good" else AlwaysWrong()).eval())
    study = tmp_path / "models.yaml"
    study.write_text("models:\n  - name: good\n    model: good\n  - name: bad\n    model: bad\n")
    template = settings(model="", n=12, batch_size=12, ladder=["apgd-ce"], sweep=[0, 1])
    out = tmp_path / "study"
    job.run_study(study, template, cifar, out, "cpu")
    kept = json.loads((out / "models" / "good" / "result.json").read_text())["robust_at_max_eps"]
    robust = sum(kept)
    assert robust > 0
    row = f"| bad | good | 12 | {-robust / 12:.4f} | 0 | {robust} | {binomtest(0, robust, 0.5).pvalue:.4f} |"
    assert "## Paired comparison at ε = 1/255 (the same samples)" in (out / "report.md").read_text()
    assert row in (out / "report.md").read_text()
    assert (out / "paired.csv").read_text().splitlines()[1].startswith(f"bad,good,12,{-robust / 12}")
    assert row in job.run_study(study, template, cifar, out, "cpu").read_text()  # both skipped, read back from result.json
    done = out / "models" / "bad" / "result.json"
    old = json.loads(done.read_text())
    old.pop("robust_at_max_eps")
    done.write_text(json.dumps(old))
    assert "Paired comparison" not in job.run_study(study, template, cifar, out, "cpu").read_text()
    assert not (out / "paired.csv").exists()


def test_an_undefined_mcnemar_p_is_a_dash_in_the_report_and_an_empty_cell_in_paired_csv(tmp_path) -> None:
    """Two models robust on the same samples have no discordant pair, so McNemar's p is undefined: the report shows
    '–' as for every undefined value (an empty cell reads as a structural blank), paired.csv an empty cell."""
    results = {"a": {"robust_at_max_eps": [True, False, True]}, "b": {"robust_at_max_eps": [True, False, True]}}
    lines = job._paired_section(results, "4/255", tmp_path)
    assert "| b | a | 3 | 0.0000 | 0 | 0 | – |" in "\n".join(lines)
    assert (tmp_path / "paired.csv").read_text().splitlines()[1] == "b,a,3,0.0,0,0,"


def test_cifar10c_runs_through_loader_options(tmp_path, tiny, capsys) -> None:
    """CIFAR-10-C needs its corruption and severity, given as -o like `wsol data verify` takes them: the run records them,
    the report names them, another severity into the same --out is another run, and a run without them records none."""
    from tests.data.test_cifar import make_cifar10c

    root = tmp_path / "c10c"
    root.mkdir()
    make_cifar10c(root, per=6)
    base = ["robustness", "evaluate", "--model", "tiny", "--dataset", "cifar10c", "--root", str(root), "--attacks", "apgd-ce", "--n", "4",
            "--batch-size", "4", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu"]
    assert run([*base, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-o corruption=fog" in err and "available: fog, gaussian_noise" in err, err
    out = tmp_path / "fog"
    assert run([*base, "-o", "corruption=fog", "--option", "severity=2", "--out", str(out)]) == 0
    assert (out / "report.md").read_text().splitlines()[0] == "# Robustness of tiny on cifar10c (corruption=fog, severity=2)"
    assert json.loads((out / "run.json").read_text())["dataset_options"] == {"corruption": "fog", "severity": 2}
    capsys.readouterr()
    assert run([*base, "-o", "corruption=fog", "-o", "severity=3", "--out", str(out)]) == 2
    assert "other arguments (dataset_options.severity was 2, now 3)" in capsys.readouterr().err
    sweep = ["robustness", "per-class", "--model", "tiny", "--dataset", "cifar10c", "--root", str(root), "--eps-sweep", "0:1", "--n", "4",
             "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "-o", "corruption=gaussian_noise", "--out", str(tmp_path / "sweep")]
    assert run(sweep) == 0
    assert "on cifar10c (corruption=gaussian_noise)" in (tmp_path / "sweep" / "report.md").read_text().splitlines()[0]
    study = tmp_path / "study.yaml"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    assert run(["robustness", "study", str(study), "--dataset", "cifar10c", "--root", str(root), "--eps-sweep", "0:1", "--n", "4", "--n-iter", "1",
                "--n-restarts", "1", "--device", "cpu", "-o", "corruption=fog", "-o", "severity=5", "--out", str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "report.md").read_text().splitlines()[0] == "# Per-class robustness study on cifar10c (corruption=fog, severity=5)"
    assert json.loads((tmp_path / "st" / "models" / "a" / "run.json").read_text())["dataset_options"] == {"corruption": "fog", "severity": 5}
    cifar = tmp_path / "c10"
    make_cifar(cifar)
    assert run(["robustness", "evaluate", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--attacks", "apgd-ce", "--n", "4",
                "--n-iter", "1", "--device", "cpu", "--out", str(tmp_path / "plain")]) == 0
    assert "dataset_options" not in json.loads((tmp_path / "plain" / "run.json").read_text())  # as run.json was before -o existed


def test_a_study_drops_its_report_while_a_model_is_to_run(cifar, tmp_path, tiny, monkeypatch) -> None:
    """The study's report, tables and figures are of the whole set: once a model is added (or starts over) they are removed
    before its attack, so a run killed in it leaves no report of the old set beside the new model's results."""
    study, out = tmp_path / "models.yaml", tmp_path / "study"
    study.write_text("models:\n  - name: a\n    model: tiny\n")
    template = settings(model="", ladder=["apgd-ce"], n=4, sweep=[0, 2])
    job.run_study(study, template, cifar, out, "cpu")
    assert {p.name for p in out.iterdir()} >= {"report.md", "ladder.csv", "figures"}
    study.write_text("models:\n  - name: a\n    model: tiny\n  - name: b\n    model: tiny2\n")
    real = job.evaluate_robustness

    def killed(s, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "evaluate_robustness", killed)
    with pytest.raises(KeyboardInterrupt):
        job.run_study(study, template, cifar, out, "cpu")
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["models"]
    monkeypatch.setattr(job, "evaluate_robustness", real)
    assert "| b |" in job.run_study(study, template, cifar, out, "cpu").read_text()
    job.run_study(study, template, cifar, out, "cpu")  # all done: the report is rewritten, nothing removed first
    assert (out / "report.md").is_file()


def test_cifar10_and_its_corrupted_set_may_name_the_same_classes_apart(tmp_path) -> None:
    """A CIFAR-10 model on CIFAR-10-C (its own class list) is the usual corruption evaluation: a note, never a refusal."""
    from wsol.jobs.runfolder import check_checkpoint_dataset, class_names_note
    from wsol.models import build_model, save_model

    ck = save_model(build_model("small-cnn", 2, input_size=32), tmp_path / "m", dataset="cifar10", class_names=["c0", "c1"])
    check_checkpoint_dataset(ck, "cifar10c", ["airplane", "automobile"])
    assert "if it is another dataset" in class_names_note(ck, "cifar10c", ["airplane", "automobile"])
    with pytest.raises(ConfigError, match="pass a checkpoint trained on svhn, or --dataset cifar10"):
        check_checkpoint_dataset(ck, "svhn", ["0", "1"])


def test_first_takes_the_splits_first_n_samples_as_robustbench_does(cifar, tmp_path, tiny, capsys) -> None:
    """--first evaluates the split's first n images (RobustBench's load_cifar10 order) rather than a draw from --seed; it is
    part of the run, said in the report, and a rerun without it is refused naming it."""
    from wsol.jobs.runfolder import select_samples

    assert select_samples(24, 5, seed=3, default=500, first=True) == [0, 1, 2, 3, 4]
    assert select_samples(24, 5, seed=3, default=500) != [0, 1, 2, 3, 4]  # so the check below can tell the two apart
    with pytest.raises(ConfigError):
        select_samples(24, 25, seed=3, default=500, first=True)
    base = ["robustness", "per-class", "--model", "tiny", "--dataset", "cifar10", "--root", str(cifar), "--eps-sweep", "0:1", "--n", "5",
            "--seed", "3", "--n-iter", "1", "--n-restarts", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert run([*base, "--first"]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "The first 5 test samples in the split's order (as RobustBench takes them; seed 3 seeds the attacks)" in report
    assert "Samples per class: c0 1, c1 1, c2 1, c3 1, c4 1, c5 0, c6 0, c7 0, c8 0, c9 0." in report  # test labels are i % 10
    assert json.loads((tmp_path / "run" / "run.json").read_text())["first"] is True
    capsys.readouterr()
    assert run(base) == 2
    assert "other arguments (first was True, now False)" in capsys.readouterr().err
    assert run([*base[:-1], str(tmp_path / "drawn")]) == 0
    assert "first" not in json.loads((tmp_path / "drawn" / "run.json").read_text())  # as run.json was before --first existed
    assert "5 test samples drawn with seed 3" in (tmp_path / "drawn" / "report.md").read_text()
