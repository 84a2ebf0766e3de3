"""The CLI: help, version, models, config show, one-line errors with exit status 2."""
from __future__ import annotations

from wsol.cli import run


def test_help_lists_commands(capsys) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("models", "config", "data"):
        assert command in out


def test_version(capsys) -> None:
    import wsol

    assert run(["--version"]) == 0
    assert wsol.__version__ in capsys.readouterr().out


def test_models_lists_architectures(capsys) -> None:
    assert run(["models"]) == 0
    out = capsys.readouterr().out
    for arch in ("resnet50", "vgg16-gap", "wrn-28-10", "wrn-40-2", "wrn-34-10", "wrn-70-16", "preact-resnet18", "small-cnn"):
        assert arch in out


def test_config_show_resolves_overrides(capsys, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method: art\n")
    assert run(["config", "show", str(path), "--set", "art.eps=2/255"]) == 0
    out = capsys.readouterr().out
    assert "method: art" in out and "eps: 0.00784313725490196" in out


def test_user_error_is_one_line_exit_2(capsys, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("art:\n  lamda: 3\n")
    assert run(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "art.lamda" in err and "Traceback" not in err
