"""`wsol report table1` and `wsol report figures` over two small attack runs."""
from __future__ import annotations

import csv
import json

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
    assert printed.splitlines()[0].startswith("| run | method | attribution | IN |")
    rows = list(csv.DictReader(out.open()))
    assert [r["run"] for r in rows] == [r.name for r in runs] and {r["method"] for r in rows} == {"art"}
    for folder, row in zip(runs, rows):
        summary = json.loads((folder / "summary.json").read_text())
        assert float(row["natural"]) == pytest.approx(summary["natural_accuracy"])
        assert float(row["PGD"]) == pytest.approx(summary["pgd_accuracy"])
        assert f"| {summary['metrics']['kendall']['mean']:.2f} |" in printed or summary["attacked"] == 0


def test_figures_are_pngs(runs, tmp_path) -> None:
    out = tmp_path / "figs"
    assert run(["report", "figures", *map(str, runs), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"fig11_boxplots.png", "fig12_eps_sweep.png", "fig6_cosine.png", f"maps_{runs[0].name}.png"} <= names
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_run_is_a_one_line_error(tmp_path, capsys) -> None:
    assert run(["report", "table1", str(tmp_path)]) == 2
    assert "not a finished attack run" in capsys.readouterr().err
