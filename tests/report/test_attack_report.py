"""`wsol report table1` and `wsol report figures` over two small attack runs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from wsol.cli import run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shapes_run) -> list:
    tiny = shapes_run(tmp_path_factory.mktemp("report"), n_test=10, num_classes=2, seed=5, method="art")
    base, root, checkpoint = tiny["base"], tiny["root"], tiny["checkpoint"]
    folders = []
    for eps in ("2/255", "8/255"):
        out = base / f"eps{eps.split('/')[0]}"
        argv = ["attack", "attribution", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--root", str(root), "--out", str(out),
                "--attribution", "grad", "--k", "20", "--steps", "2", "--n", "6", "--batch-size", "6", "--pgd-steps", "1", "--eps", eps]
        assert run(argv) == 0
        folders.append(out)
    return folders


def test_table1_prints_markdown_and_writes_csv(runs, tmp_path, capsys) -> None:
    out = tmp_path / "table1.csv"
    assert run(["report", "table1", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == ("| run | dataset | method | attribution | preset | samples | n IN/K | IN (%) | IN 95% CI | K (%) | K 95% CI | "
                        "natural acc (%) | PGD acc (%) |")  # units and the count of each number in the header
    assert len(lines) == 2 + len(runs)  # stdout holds the Markdown table only, so `> table.md` keeps it clean
    rows = list(csv.DictReader(out.open()))
    assert [r["run"] for r in rows] == [r.name for r in runs] and {r["method"] for r in rows} == {"art"}
    assert {r["dataset"] for r in rows} == {"shapes"} and {r["preset"] for r in rows} == {"consistent"}
    for folder, row in zip(runs, rows):
        summary = json.loads((folder / "summary.json").read_text())
        assert float(row["natural acc (%)"]) == pytest.approx(summary["natural_accuracy"])
        assert float(row["PGD acc (%)"]) == pytest.approx(summary["pgd_accuracy"])
        assert int(row["n IN/K"]) == summary["metrics"]["topk_intersection"]["n"] and int(row["samples"]) == summary["total"] == 6
        assert summary["attacked"] > 0 and f"| {summary['metrics']['kendall']['mean']:.2f} |" in printed


def test_table1_csv_holds_each_interval_as_two_numbers_at_full_precision(runs, tmp_path, capsys) -> None:
    """IN 95% CI and K 95% CI were the text "[66.32, 80.35]": rounded, to be parsed, and split in two by numpy.genfromtxt
    at its comma. Now two numeric columns each, equal to the t-interval of the samples' scores; the Markdown shows [a, b]."""
    from scipy.stats import ttest_1samp

    out = tmp_path / "table1.csv"
    assert run(["report", "table1", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open(newline="")))
    table = np.atleast_1d(np.genfromtxt(out, delimiter=",", names=True, dtype=None, encoding=None))
    assert len(table) == len(rows) and table.dtype["IN_95_CI_low"].kind == table.dtype["K_95_CI_high"].kind == "f"
    defined = 0
    for folder, row, line in zip(runs, rows, printed.splitlines()[2:]):
        samples = list(csv.DictReader((folder / "samples.csv").open(newline="")))
        for metric, column in (("topk_intersection", "IN 95% CI"), ("kendall", "K 95% CI")):
            scores = [100 * float(r[metric]) for r in samples if r[metric] not in ("", "nan")]
            if len(scores) < 2:
                assert row[f"{column} low"] == row[f"{column} high"] == ""
                continue
            ci = ttest_1samp(scores, 0).confidence_interval(0.95)
            expected = (max(ci.low, 0.0), min(ci.high, 100.0)) if metric == "topk_intersection" else (max(ci.low, -100.0), min(ci.high, 100.0))
            assert (float(row[f"{column} low"]), float(row[f"{column} high"])) == pytest.approx(expected, rel=1e-9)
            assert f"| [{float(row[f'{column} low']):.2f}, {float(row[f'{column} high']):.2f}] |" in line
            defined += 1
    assert defined > 0


def test_figures_are_pngs(runs, tmp_path, capsys) -> None:
    out = tmp_path / "figs"
    assert run(["report", "figures", *map(str, runs), "--out", str(out)]) == 0
    assert "replacing" not in capsys.readouterr().out
    assert run(["report", "figures", *map(str, runs), "--out", str(out)]) == 0
    assert f"wrote {out / 'fig11_boxplots.png'} (replacing the earlier file)" in capsys.readouterr().out.splitlines()
    names = {p.name for p in out.iterdir()}
    assert {"fig11_boxplots.png", "fig12_eps_sweep.png", "fig6_cosine.png", f"maps_{runs[0].name}.png"} <= names
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_run_is_a_one_line_error(tmp_path, capsys) -> None:
    assert run(["report", "table1", str(tmp_path)]) == 2
    assert "not a finished attack run" in capsys.readouterr().err


def test_a_path_that_is_no_attack_run_is_not_told_to_become_one(tmp_path, capsys) -> None:
    """A training or robustness folder, a model file or a typo: the error must not suggest attacking into that path."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "model.safetensors").write_bytes(b"")
    for path, says in ((tmp_path / "train", "is not a finished attack run"), (tmp_path / "train" / "model.safetensors", "is a file"),
                       (tmp_path / "typo", "not found")):
        assert run(["report", "table1", str(path)]) == 2
        err = capsys.readouterr().err
        assert says in err and f"--out {path}" not in err and "`wsol attack attribution --out` wrote" in err, err


def test_table1_says_which_attack_arguments_its_runs_differ_in(runs, capsys) -> None:
    assert run(["report", "table1", *map(str, runs)]) == 0
    assert capsys.readouterr().err == "note: the runs differ in eps, which the table does not show; each run's config.json has its arguments\n"
    assert run(["report", "table1", str(runs[0])]) == 0
    assert capsys.readouterr().err == ""


def test_table1_never_writes_over_a_file_of_its_runs(runs, capsys) -> None:
    for name, says in (("summary.json", "must end in .csv (CSV) or .md"), ("samples.csv", "would destroy the run")):
        target = runs[0] / name
        before = target.read_bytes()
        assert run(["report", "table1", *map(str, runs), "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and says in err
        assert target.read_bytes() == before


def test_a_run_still_in_progress_is_named_as_such(runs, tmp_path, capsys) -> None:
    """A run with rows but no summary yet (running, or interrupted) is not reported, and the error says how to finish it."""
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "samples.csv").write_text((runs[0] / "samples.csv").read_text())
    (unfinished / "config.json").write_text((runs[0] / "config.json").read_text())
    for argv in (["report", "table1", str(unfinished)], ["report", "figures", str(unfinished), "--out", str(tmp_path / "f")]):
        assert run(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "has not finished" in err and "rerun the same `wsol attack` command" in err
    assert not (tmp_path / "f").exists()


def test_table1_reads_a_folder_named_twice_once_and_says_it_replaces_the_csv(runs, tmp_path, capsys) -> None:
    out = tmp_path / "table1.csv"
    out.write_text("old\n")
    assert run(["report", "table1", str(runs[0]), str(runs[0]) + "/", str(runs[1]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 + 2
    assert captured.err.splitlines()[0] == f"wrote {out} (replacing the earlier file)"  # then the note on eps
    assert [r["run"] for r in csv.DictReader(out.open())] == [runs[0].name, runs[1].name]


def test_figures_without_an_eps_sweep_say_so_instead_of_plotting_points(runs, tmp_path, capsys) -> None:
    out = tmp_path / "one"
    assert run(["report", "figures", str(runs[0]), "--out", str(out)]) == 0
    assert "fig12_eps_sweep.png" not in {p.name for p in out.iterdir()}
    assert "note: no ε sweep" in capsys.readouterr().err



def test_figures_of_runs_without_a_sweep_remove_an_earlier_sweep_of_other_runs(runs, tmp_path, capsys) -> None:
    """The same --out reused: fig12 of the earlier runs must not stand beside the new figures as if it were theirs."""
    out = tmp_path / "figs"
    assert run(["report", "figures", *map(str, runs), "--out", str(out)]) == 0 and (out / "fig12_eps_sweep.png").is_file()
    capsys.readouterr()
    assert run(["report", "figures", str(runs[0]), "--out", str(out)]) == 0
    assert not (out / "fig12_eps_sweep.png").exists()
    assert "note: no ε sweep (fig12_eps_sweep.png, the earlier one removed)" in capsys.readouterr().err


def test_runs_with_the_same_folder_name_get_their_own_map_figures(runs, tmp_path) -> None:
    import shutil

    copies = [shutil.copytree(folder, tmp_path / side / "run") for side, folder in zip("ab", runs)]
    out = tmp_path / "figs"
    assert run(["report", "figures", *map(str, copies), "--out", str(out)]) == 0
    assert {"maps_a_run.png", "maps_b_run.png"} <= {p.name for p in out.iterdir()}


def test_a_run_without_maps_gets_a_note_instead_of_a_figure(runs, tmp_path, capsys) -> None:
    import shutil

    bare = shutil.copytree(runs[0], tmp_path / "bare")
    (bare / "maps.npz").unlink()
    out = tmp_path / "figs"
    assert run(["report", "figures", str(bare), str(runs[1]), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert "maps_bare.png" not in names and f"maps_{runs[1].name}.png" in names
    assert f"note: no maps for {bare}: it holds no maps.npz" in capsys.readouterr().err


def test_table1_writes_the_format_its_out_extension_names(runs, tmp_path, capsys) -> None:
    """--out table1.md gets the Markdown table (it got CSV before); an extension naming no format is one line, nothing written."""
    out = tmp_path / "table1.md"
    assert run(["report", "table1", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed and out.read_text().startswith("| run | dataset |")
    for name in ("table1.txt", "table1"):
        assert run(["report", "table1", *map(str, runs), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "must end in .csv (CSV) or .md (Markdown)" in err
        assert not (tmp_path / name).exists()


def test_table1_notes_no_difference_in_arguments_without_effect() -> None:
    """A grad run with --ig-steps 7 and one with the default: the same attack, so no 'runs differ in ig_steps' note."""
    from types import SimpleNamespace

    from wsol.report.attack import setting_differences

    grad = {"attribution": "grad", "ig_steps": 100, "pgd_steps": 0, "pgd_eps": "8/255", "eps": "8/255"}
    runs = [SimpleNamespace(config=grad), SimpleNamespace(config=dict(grad, ig_steps=7, pgd_eps="4/255"))]
    assert setting_differences(runs) == []
    runs.append(SimpleNamespace(config=dict(grad, attribution="ig", ig_steps=7, eps="4/255")))
    assert setting_differences(runs) == ["eps"]
    assert setting_differences([SimpleNamespace(config=dict(grad, attribution="ig")), runs[2]]) == ["eps", "ig_steps"]


def test_table1_paired_subtracts_the_first_runs_scores_sample_by_sample(runs, tmp_path, capsys) -> None:
    from scipy.stats import ttest_rel

    assert run(["report", "table1", *map(str, runs), "--paired"]) == 0
    printed = capsys.readouterr().out
    assert "| run | against | n paired | ΔIN (points) | ΔIN 95% CI | ΔK (points) | ΔK 95% CI |" in printed
    scores = []
    for folder in runs:
        rows = list(csv.DictReader((folder / "samples.csv").open()))
        scores.append({int(r["index"]): float(r["topk_intersection"]) * 100 for r in rows if r["topk_intersection"] not in ("", "nan")})
    both = sorted(set(scores[0]) & set(scores[1]))
    diff = [scores[1][i] - scores[0][i] for i in both]
    ci = ttest_rel([scores[1][i] for i in both], [scores[0][i] for i in both]).confidence_interval(0.95)
    row = next(line for line in printed.splitlines() if line.startswith(f"| {runs[1].name} | {runs[0].name} |"))
    assert row.split(" | ")[2:5] == [str(len(both)), f"{sum(diff) / len(diff):.2f}", f"[{ci.low:.2f}, {ci.high:.2f}]"]
    for one in ([str(runs[0])], [str(runs[0]), f"{runs[0]}/"]):  # the same folder twice is one run
        assert run(["report", "table1", *one, "--paired"]) == 2
        assert capsys.readouterr().err == ("error: --paired compares each run with the first: give at least two different run folders "
                                           "(a folder named twice is read once)\n")


def test_table1_paired_pairs_no_samples_across_splits() -> None:
    """Index 44 of the train split is another image than index 44 of the test split: such runs were paired sample by
    sample as if both had scored the same images."""
    import numpy as np

    from wsol.report.attack import AttackRun, paired_rows

    def attack_run(name: str, split: str, scores: list) -> AttackRun:
        columns = {"index": np.arange(len(scores), dtype=float), "topk_intersection": np.array(scores), "kendall": np.array(scores)}
        return AttackRun(Path(name), {"config": {"dataset": "shapes", "split": split}}, columns)

    test_a, test_b, train = attack_run("a", "test", [0.5, 0.6, 0.7]), attack_run("b", "test", [0.6, 0.6, 0.9]), attack_run("c", "train", [0.1, 0.2, 0.3])
    rows, notes = paired_rows([test_a, test_b, train])
    assert [(r["run"], r["n paired"]) for r in rows] == [("b", 3)]
    assert notes == ["c is on shapes train, a on shapes test: no samples to pair"]
    fog = AttackRun(Path("d"), {"config": {"dataset": "shapes", "split": "test", "dataset_options": {"severity": 5}}}, test_b.columns)
    assert paired_rows([test_a, fog])[1] == ["d is on shapes (severity=5) test, a on shapes test: no samples to pair"]  # other loader options: other images


def test_paired_rows_count_in_and_k_apart_and_note_another_root(tmp_path) -> None:
    """A constant map has no Kendall τ: ΔK then rests on fewer samples, and the row says so; runs that read other
    --root folders are paired by index with a note (the same name may be another synthetic set)."""
    import numpy as np

    from wsol.report.attack import AttackRun, paired_rows

    def attack_run(name: str, root: str, kendall: list) -> AttackRun:
        columns = {"index": np.array([0.0, 1.0, 2.0]), "topk_intersection": np.array([0.5, 0.6, 0.7]), "kendall": np.array(kendall)}
        return AttackRun(tmp_path / name, {"config": {"dataset": "shapes", "split": "test", "root": root}}, columns)

    rows, notes = paired_rows([attack_run("a", "/d1", [0.1, 0.2, 0.3]), attack_run("b", "/d1", [0.2, float("nan"), 0.5])])
    assert rows[0]["n paired"] == "3 IN / 2 K" and rows[0]["ΔIN (points)"] == 0 and rows[0]["ΔK (points)"] == pytest.approx(15.0)
    assert notes == []
    rows, notes = paired_rows([attack_run("a", "/d1", [0.1, 0.2, 0.3]), attack_run("b", "/d2", [0.1, 0.2, 0.3])])
    assert rows[0]["n paired"] == 3 and notes == ["b read /d2, a /d1: pairing by dataset index assumes both folders hold the same images"]


def test_table1_paired_with_a_csv_out_says_the_paired_table_is_on_stdout(runs, tmp_path, capsys) -> None:
    assert run(["report", "table1", *map(str, runs), "--paired", "--out", str(tmp_path / "t.csv")]) == 0
    captured = capsys.readouterr()
    assert "| run | against | n paired |" in captured.out and "ΔIN" not in (tmp_path / "t.csv").read_text()
    assert f"note: the paired table is on stdout only: the CSV {tmp_path / 't.csv'} holds Table 1's rows (a .md --out holds both)" in captured.err
