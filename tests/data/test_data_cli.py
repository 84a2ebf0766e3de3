"""`wsol data synth | verify | show` through ``wsol.cli.run``, plus the verify/show library calls."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from wsol.cli import run
from wsol.data import build_dataset
from wsol.data.verify import parse_loader_options, show_grid, verify_dataset
from wsol.errors import ConfigError


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_synth_verify_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "shapes"
    assert run(["data", "synth", "shapes", "--out", str(out), "--n-train", "20", "--n-test", "10", "--num-classes", "4", "--seed", "2"]) == 0
    assert "20 train + 10 test" in capsys.readouterr().out
    assert run(["data", "verify", "shapes", "--root", str(out)]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.split() and line.split()[0] in ("train", "test")}
    assert rows["train"][1:4] == ["20", "4", "5"] and rows["test"][1:3] == ["10", "4"]
    grid = tmp_path / "grid.png"
    assert run(["data", "show", "shapes", "--root", str(out), "--n", "6", "--out", str(grid), "--split", "train"]) == 0
    image = cv2.imread(str(grid))
    assert image is not None and image.shape[0] > 128 and image.shape[1] > 3 * 128
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_verify_cub_reports_corrupt_files(cub_tree: Path, cub_spec: dict, capsys: pytest.CaptureFixture) -> None:
    assert run(["data", "verify", "cub", "--root", str(cub_tree)]) == 0
    capsys.readouterr()
    (cub_tree / "images" / cub_spec["images"][1][2]).write_bytes(b"\xff\xd8 broken")
    assert run(["data", "verify", "cub", "--root", str(cub_tree)]) == 1
    assert "Red_bird_0002.jpg" in capsys.readouterr().out
    assert run(["data", "verify", "cub", "--root", str(cub_tree), "--skip-corrupt"]) == 0
    assert "skipped: 001.Red_bird/Red_bird_0002.jpg" in capsys.readouterr().out


def test_verify_reports_boxes_past_the_border(cub_tree: Path, capsys: pytest.CaptureFixture) -> None:
    lines = (cub_tree / "bounding_boxes.txt").read_text().splitlines()
    first = lines[0].split()[0]
    lines[0] = f"{first} 10 10 900 900"
    (cub_tree / "bounding_boxes.txt").write_text("\n".join(lines) + "\n")
    assert run(["data", "verify", "cub", "--root", str(cub_tree)]) == 1
    out = capsys.readouterr().out
    assert "box (" in out and "lies outside" in out


def test_malformed_tree_exits_2_with_one_line(cub_tree: Path, capsys: pytest.CaptureFixture) -> None:
    (cub_tree / "bounding_boxes.txt").write_text("1 5 6 20 10\n2 1.5 2.5\n")
    assert run(["data", "verify", "cub", "--root", str(cub_tree)]) == 2
    _one_line_error(capsys, "bounding_boxes.txt, line 2")
    assert run(["data", "show", "cub", "--root", str(cub_tree), "--out", str(cub_tree / "g.png")]) == 2
    _one_line_error(capsys, "bounding_boxes.txt, line 2")
    assert not (cub_tree / "g.png").exists()


def test_user_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["data", "synth", "blobs", "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "unknown synthetic dataset 'blobs'")
    assert run(["data", "verify", "cub"]) == 2
    _one_line_error(capsys, "needs --root")
    assert run(["data", "verify", "nosuch", "--root", str(tmp_path)]) == 2
    _one_line_error(capsys, "unknown dataset 'nosuch'")
    assert run(["data", "synth", "shapes", "--out", str(tmp_path / "y"), "--num-classes", "99"]) == 2
    _one_line_error(capsys, "num_classes")
    assert run(["data", "show", "cub", "--root", str(tmp_path / "missing")]) == 2
    _one_line_error(capsys, "dataset root not found")


def test_verify_and_show_library(cub_tree: Path, tmp_path: Path) -> None:
    report = verify_dataset("cub", cub_tree)
    assert list(report["splits"]) == ["train", "test"] and report["problems"] == 0
    assert report["splits"]["test"]["per_class"] == {"Red_bird": 1, "Blue_bird": 2}
    assert report["splits"]["train"]["has_masks"]
    out = show_grid(build_dataset("cub", cub_tree, "test"), 2, tmp_path / "sub" / "g.png", seed=1)
    assert cv2.imread(str(out)).shape[2] == 3


def test_loader_options_parse() -> None:
    assert parse_loader_options(["metadata=/a/b", "num-classes=3", "skip_corrupt=true", "x=0.5"]) == {
        "metadata": "/a/b",
        "num_classes": 3,
        "skip_corrupt": True,
        "x": 0.5,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_loader_options(["novalue"])
    assert parse_loader_options(["severity=5", "severity=5"]) == {"severity": 5}
    with pytest.raises(ConfigError, match=r"loader option severity is given twice \(severity=3 and severity=5\)"):
        parse_loader_options(["severity=3", "severity=5"])  # the last one won silently


def test_unknown_loader_option_exits_2(cub_tree: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["data", "verify", "cub", "--root", str(cub_tree), "-o", "colour=red"]) == 2
    _one_line_error(capsys, "dataset 'cub' has no option 'colour'")
    assert run(["data", "show", "cub", "--root", str(cub_tree), "-o", "masks=false", "--n", "2", "--out", str(cub_tree / "g.png")]) == 0


# session 6: what a new user trips on
def test_verify_lists_every_missing_image_and_exits_1(cub_tree: Path, cub_spec: dict, capsys: pytest.CaptureFixture) -> None:
    for row in cub_spec["images"][:2]:
        (cub_tree / "images" / row[2]).unlink()
    assert run(["data", "verify", "cub", "--root", str(cub_tree)]) == 1
    out = capsys.readouterr().out
    assert all(f"missing: {row[2]}" in out for row in cub_spec["images"][:2]), out
    assert run(["data", "verify", "cub", "--root", str(cub_tree), "--skip-corrupt"]) == 0
    assert f"skipped: {cub_spec['images'][0][2]}: missing" in capsys.readouterr().out


def test_verify_flags_an_empty_split(cub_tree: Path, capsys: pytest.CaptureFixture) -> None:
    split = cub_tree / "train_test_split.txt"
    split.write_text("".join(f"{line.split()[0]} 1\n" for line in split.read_text().splitlines()))
    assert run(["data", "verify", "cub", "--root", str(cub_tree)]) == 1
    out = capsys.readouterr().out
    assert "[test] empty: no images in this split" in out and "[train]" not in out


def test_synth_into_the_cache_takes_only_the_default_set(tmp_path: Path, monkeypatch, capsys) -> None:
    import inspect

    from wsol.cli import data_synth
    from wsol.data.shapes import DEFAULT_PARAMS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert run(["data", "synth", "shapes", "--num-classes", "4", "--n-train", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the shapes cache") and "--n-train 8 --num-classes 4" in err and "--out DIR" in err
    assert not (tmp_path / "cache").exists()
    cli_defaults = {k: p.default.default if hasattr(p.default, "default") else p.default for k, p in inspect.signature(data_synth).parameters.items() if k in DEFAULT_PARAMS}
    assert cli_defaults == DEFAULT_PARAMS


def test_missing_or_file_root_says_where_to_get_the_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The README's real-data commands fail before any data exists: the line names the folder and where the data comes from."""
    missing = tmp_path / "CUB_200_2011"
    assert run(["data", "verify", "cub", "--root", str(missing)]) == 2
    _one_line_error(capsys, f"dataset root not found: {missing}", "'cub' section of datasets/README.md")
    assert run(["data", "verify", "shapes", "--root", str(missing)]) == 2
    _one_line_error(capsys, f"wsol data synth shapes --out {missing}")
    afile = tmp_path / "images.txt"
    afile.write_text("1 a.png\n")
    assert run(["data", "verify", "shapes", "--root", str(afile)]) == 2
    _one_line_error(capsys, f"dataset root {afile} is a file, not a folder", str(tmp_path))


def test_show_says_when_it_replaces_the_grid(cub_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every --out file replaces an existing one and its `wrote` line says so (README)."""
    grid = tmp_path / "grid.png"
    argv = ["data", "show", "cub", "--root", str(cub_tree), "--n", "2", "--out", str(grid)]
    assert run(argv) == 0
    assert capsys.readouterr().out == f"wrote {grid}\n"
    assert run(argv) == 0
    assert capsys.readouterr().out == f"wrote {grid} (replacing the earlier file)\n"


def test_synth_says_when_it_replaces_an_earlier_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Regenerating into a shapes folder replaces the set (other parameters included): the line says so."""
    out = tmp_path / "shapes"
    argv = ["data", "synth", "shapes", "--out", str(out), "--n-train", "4", "--n-test", "2", "--num-classes", "2", "--size", "32"]
    assert run(argv) == 0
    assert not capsys.readouterr().out.rstrip().endswith("(replacing the earlier set)")
    assert run(argv) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"to {out} (replacing the earlier set)")


@pytest.mark.parametrize("name, missing", [("cub", "images.txt"), ("cifar10", "batches.meta"), ("svhn", "train_32x32.mat"),
                                           ("gtsrb", "Final_Training"), ("flowers17", "datasplits.mat")])
def test_empty_root_names_the_file_and_where_to_get_the_data(name: str, missing: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert run(["data", "verify", name, "--root", str(tmp_path)]) == 2
    _one_line_error(capsys, missing, f"'{name}' section of datasets/README.md")


def test_show_says_when_the_split_has_fewer_images_than_n(cub_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["data", "show", "cub", "--root", str(cub_tree), "--n", "500", "--out", str(tmp_path / "g.png")]) == 0
    err = capsys.readouterr().err
    assert "fewer than --n 500: drawing all" in err and err.count("\n") == 1
