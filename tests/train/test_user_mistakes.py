"""What a new user trips on in `wsol train`: file modes under a strict umask, an empty `--set` value,
an empty split, an annotation that does not fit its image; each refused before the run folder exists."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wsol.cli import run
from wsol.config import parse_override
from wsol.data import shapes as shapes_module
from wsol.errors import ConfigError

FAST = ["--arch", "small-cnn", "--epochs", "1", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    return shapes_module.synthesize_shapes(root / "tree", n_train=8, n_test=6, size=32, num_classes=3, seed=0)


def _copy(tree: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tree, dest))


def test_every_run_file_follows_the_umask(tmp_path, tiny_shapes) -> None:
    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        assert run(["train", "shapes", "--root", str(tiny_shapes), "--out", str(out), *FAST]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert {"model.safetensors", "model.json", "train_state.pt", "metrics.jsonl", "config.yaml"} <= set(modes)
    assert all(mode == 0o640 for mode in modes.values()), modes


@pytest.mark.parametrize("text", ["epochs=", "epochs= ", "=3", " =3"])
def test_override_without_key_or_value_is_refused(text) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


def _one_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert all(n in err for n in needles), err
    return err


def test_empty_test_split_is_refused_before_anything_is_written(tmp_path, tiny_shapes, capsys) -> None:
    root = _copy(tiny_shapes, tmp_path / "tree")
    split = root / "train_test_split.txt"
    split.write_text("".join(f"{line.split()[0]} 1\n" for line in split.read_text().splitlines()))
    out = tmp_path / "run"
    assert run(["train", "shapes", "--root", str(root), "--out", str(out), *FAST]) == 2
    _one_error(capsys, "test", "no images")
    assert not out.exists()


def test_box_past_the_border_is_refused_before_the_first_epoch(tmp_path, tiny_shapes, capsys) -> None:
    root = _copy(tiny_shapes, tmp_path / "tree")
    boxes = root / "bounding_boxes.txt"
    lines = boxes.read_text().splitlines()
    lines[-1] = f"{lines[-1].split()[0]} 20 20 500 500"
    boxes.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert run(["train", "shapes", "--root", str(root), "--out", str(out), *FAST]) == 2
    _one_error(capsys, "outside the 32x32 image")
    assert not out.exists()


def test_config_folder_is_named_as_a_folder(tmp_path) -> None:
    from wsol.config import load_config

    with pytest.raises(ConfigError, match="is a folder; pass a YAML file"):
        load_config(tmp_path)


def test_loader_options_reach_both_splits_and_the_config(tmp_path, tiny_shapes, capsys) -> None:
    """`wsol train DATASET -o KEY=VALUE` (wsolmeta's metadata=DIR) reads both splits with the option and records it in
    config.yaml; an option the loader lacks, or a config value that is not a mapping, is one line before any run folder."""
    import yaml

    out = tmp_path / "run"
    assert run(["train", "shapes", "--root", str(tiny_shapes), "--out", str(out), *FAST, "-o", "native_size=32"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["dataset_options"] == {"native_size": 32}
    capsys.readouterr()
    assert run(["train", "shapes", "--root", str(tiny_shapes), "--out", str(tmp_path / "bad"), *FAST, "-o", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset 'shapes' has no option 'bogus'" in err and not (tmp_path / "bad").exists(), err
    assert run(["train", "shapes", "--root", str(tiny_shapes), "--out", str(tmp_path / "bad"), *FAST, "--set", "dataset_options=3"]) == 2
    assert "dataset_options: expected a mapping of KEY: VALUE, got 3" in capsys.readouterr().err


def test_images_of_several_sizes_without_a_resizing_transform_are_one_line(tmp_path, cub_tree, capsys) -> None:
    """`wsol train cub --arch small-cnn` (no shipped config: transform 'none') ended in torch.stack's traceback on
    CUB's images of several sizes; it names the sizes and a transform that resizes."""
    argv = ["train", "cub", "--root", str(cub_tree), "--out", str(tmp_path / "run"), "--arch", "small-cnn", "--epochs", "1", "--batch-size", "2"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: the images of a batch differ in size (") and "--set transform=cub" in err, err
    assert "Traceback" not in err
