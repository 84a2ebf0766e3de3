"""`wsol visualize` draws a grid a reader can decode: its title says what the maps are, a legend names the colours."""
from __future__ import annotations

from pathlib import Path

import pytest

import wsol.report.figures as figures
from wsol.config import LocalizeConfig
from wsol.errors import WsolError
from wsol.jobs.visualize import run_visualize


def test_visualize_titles_the_grid_and_names_its_colours(tmp_path: Path, shapes_run, monkeypatch) -> None:
    tiny = shapes_run(tmp_path, n_test=4, num_classes=2, seed=3)
    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, dpi=100: drawn.append(fig) or save(fig, path, dpi))
    out = run_visualize(tiny["checkpoint"], "shapes", tiny["root"], tmp_path / "grid.png", LocalizeConfig(threshold=0.3), n=3, device="cpu")
    assert out.is_file() and len(drawn) == 1
    fig = drawn[0]
    assert fig.get_suptitle().startswith("grad maps of ") and "predicted class" in fig.get_suptitle()
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["ground-truth box", "predicted box (threshold 0.3)"]
    assert any(ax.get_ylabel().startswith("attribution") for ax in fig.axes)


def test_visualize_says_when_the_split_has_fewer_images_than_n(tmp_path: Path, shapes_run, capsys) -> None:
    tiny = shapes_run(tmp_path, n_test=4, num_classes=2, seed=3)
    run_visualize(tiny["checkpoint"], "shapes", tiny["root"], tmp_path / "grid.png", LocalizeConfig(), n=9, device="cpu")
    assert "note: the test split has 4 images, fewer than --n 9: drawing all 4" in capsys.readouterr().err


def test_visualize_prints_no_note_before_a_corrupt_image_error(tmp_path: Path, shapes_run, capsys) -> None:
    tiny = shapes_run(tmp_path, n_test=4, num_classes=2, seed=3)
    for image in Path(tiny["root"], "images").rglob("*.png"):
        image.write_bytes(b"not a png")
    with pytest.raises(WsolError):
        run_visualize(tiny["checkpoint"], "shapes", tiny["root"], tmp_path / "grid.png", LocalizeConfig(), n=9, device="cpu")
    assert "note:" not in capsys.readouterr().err


def test_under_torchrun_only_rank_0_visualizes_and_evaluates(tmp_path: Path, shapes_run, monkeypatch, capsys) -> None:
    """Both ranks drew the grid, wrote it and printed 'wrote grid.png' (evaluate: two 'wrote' lines, two writers of one
    .metrics.json); a one-process command now leaves its work to rank 0."""
    from wsol.cli import run

    tiny = shapes_run(tmp_path, n_test=4, num_classes=2, seed=3)
    pred = tmp_path / "preds.json"
    common = ["--dataset", "shapes", "--root", str(tiny["root"])]
    assert run(["localize", "--checkpoint", str(tiny["checkpoint"]), *common, "--out", str(pred)]) == 0
    monkeypatch.setenv("RANK", "1")
    capsys.readouterr()
    assert run(["visualize", "--checkpoint", str(tiny["checkpoint"]), *common, "--out", str(tmp_path / "grid.png")]) == 0
    assert run(["evaluate", "--pred", str(pred), *common]) == 0
    assert capsys.readouterr().out == "" and not (tmp_path / "grid.png").exists() and not (tmp_path / "preds.metrics.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert run(["visualize", "--checkpoint", str(tiny["checkpoint"]), *common, "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()
