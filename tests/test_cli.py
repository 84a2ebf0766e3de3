"""The CLI: help, version, models, config show, one-line errors with exit status 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from wsol.cli import INTERRUPTED, run


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
    for name in ("Peng2023Robust", "Wang2023Better_WRN-70-16", "Bai2023Improving_edm", "pyautoattack-resnet18"):
        assert f"  {name} " in out


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


def _commands():
    """Every leaf command of the app as (path, command), walking typer's click tree."""
    import typer

    from wsol.cli import app

    stack = [("wsol", typer.main.get_command(app))]
    while stack:
        path, cmd = stack.pop()
        subs = getattr(cmd, "commands", None)
        if subs:
            stack.extend((f"{path} {name}", sub) for name, sub in subs.items())
        else:
            yield path, cmd


def test_every_option_has_help_and_shared_options_read_the_same() -> None:
    seen = {}
    for path, cmd in _commands():
        for param in cmd.params:
            name = param.opts[0]
            if name == "--help":
                continue
            assert getattr(param, "help", None), f"{path}: {name} has no help text"
            if name in ("--device", "--root", "--seed", "--batch-size", "--option", "--set", "--checkpoint", "--attribution"):
                seen.setdefault(name, set()).add(param.help.split(" (default")[0].rstrip("."))
    for name, texts in seen.items():
        assert len(texts) == 1, f"{name} reads differently across commands: {texts}"
    assert {"--device", "--root", "--seed", "--batch-size"} <= set(seen)


def test_bare_command_prints_help(capsys) -> None:
    assert run([]) == 0
    assert "train" in capsys.readouterr().out
    assert run(["data"]) == 0
    assert "synth" in capsys.readouterr().out


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    import pytest

    import wsol.models.build as build

    monkeypatch.setattr(build.MODELS, "names", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run(["models"])


@pytest.mark.parametrize("readme", ["README.md", "datasets/README.md"])
def test_readme_command_lines_parse(readme: str) -> None:
    """Every `wsol` / `torchrun ... wsol` line of a README code block names a command and options the CLI has
    (a renamed option or a README typo fails here, not in a newcomer's shell)."""
    import re
    import shlex

    import typer

    from wsol.cli import app

    text = (Path(__file__).resolve().parents[1] / readme).read_text()
    lines = [line.split("  #")[0].split(" # ")[0].strip()
             for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S) for line in block.replace("\\\n", " ").splitlines()]
    lines = [line for line in lines if line.startswith(("wsol ", "torchrun ")) and "--help" not in line]
    assert len(lines) >= 3, readme
    for line in lines:
        argv = shlex.split(line.replace("[", "").replace("]", ""))  # [--option value ...]: optional arguments
        argv, cmd, path = argv[argv.index("wsol") + 1:], typer.main.get_command(app), ["wsol"]
        while getattr(cmd, "commands", None):  # a group (typer ships its own click)
            assert argv and argv[0] in cmd.commands, line
            path.append(argv[0])
            cmd = cmd.commands[argv.pop(0)]
        ctx = cmd.make_context(" ".join(path), argv, resilient_parsing=True)  # names only: inputs come from lines above
        assert not ctx.args, (line, ctx.args)


def test_a_default_is_stated_once_in_help() -> None:
    """An option whose help text says its default gets no second '[default: …]' from typer (the robustness
    --batch-size read 'Images per batch (default: 250; …) [default: 250]')."""
    twice = [(path, p.opts[0]) for path, cmd in _commands() for p in cmd.params
             if "(default" in (p.help or "") and p.default not in (None, False) and p.show_default is not False]
    assert not twice, twice


def test_n_help_states_the_jobs_default_counts() -> None:
    from wsol.jobs.attack import DEFAULT_N_ATTRIBUTION, DEFAULT_N_TARGETED
    from wsol.jobs.robustness import DEFAULT_N

    expected = {"attack attribution": DEFAULT_N_ATTRIBUTION, "attack targeted": DEFAULT_N_TARGETED, "robustness evaluate": DEFAULT_N,
                "robustness per-class": DEFAULT_N, "robustness study": DEFAULT_N}
    found = {}
    for path, cmd in _commands():
        for param in cmd.params:
            if param.opts[0] == "--n" and param.default is None:
                found[path.split("wsol ", 1)[-1].strip()] = param.help
    for command, count in expected.items():
        helps = [text for path, text in found.items() if path.endswith(command)]
        assert helps and f"(default: {count}," in helps[0], (command, helps)


def test_eps_and_sweep_help_state_the_jobs_defaults_per_norm() -> None:
    from wsol.jobs.robustness import DEFAULT_EPS, DEFAULT_SWEEP

    helps = {(path, param.opts[0]): param.help for path, cmd in _commands() for param in cmd.params if "robustness" in path}
    eps = [text for (path, opt), text in helps.items() if opt == "--eps"]
    sweeps = [text for (path, opt), text in helps.items() if opt == "--eps-sweep"]
    assert len(eps) == 2 and len(sweeps) == 2, helps.keys()
    for text in eps:
        assert f"(default: {DEFAULT_EPS['linf']} in linf, {DEFAULT_EPS['l2']} in l2)" in text
    for text in sweeps:
        assert f"a range {DEFAULT_SWEEP['linf']} (the default)" in text and f"(default: {DEFAULT_SWEEP['l2']})" in text


def test_sweep_help_says_which_end_points_a_range_keeps() -> None:
    """A user reading `--eps-sweep 0:7:2` as 0..7 expects ε = 7/255 at the end; the parser (range semantics) stops at 6.
    The help says so with examples, and the examples are what the parser gives."""
    from wsol.jobs.robustness import parse_eps_sweep

    helps = [param.help for path, cmd in _commands() if "robustness" in path for param in cmd.params if param.opts[0] == "--eps-sweep"]
    assert len(helps) == 2
    for text in helps:
        assert "0:8 (the default), which includes both ends (0,1,…,8)" in text and "0:8:2 (0,2,4,6,8)" in text, text
        assert "so 0:7:2 is 0,2,4,6 without 7" in text, text
    assert parse_eps_sweep("0:8") == list(range(9)) and parse_eps_sweep("0:8:2") == [0, 2, 4, 6, 8]
    assert parse_eps_sweep("0:7:2") == [0, 2, 4, 6]


def test_every_radius_and_step_option_of_the_attacks_states_its_unit() -> None:
    """--pgd-eps read "PGD ℓ∞ radius." and --pgd-step-size "PGD step size.": no unit, where a user may type 8 for 8/255."""
    helps = {(path, p.opts[0]): p.help for path, cmd in _commands() if path.startswith("wsol attack") for p in cmd.params}
    radii = [key for key in helps if key[1] in ("--eps", "--step-size", "--pgd-eps", "--pgd-step-size", "--lr")]
    assert len(radii) == 6, radii
    for key in radii:
        assert "pixel units" in helps[key], (key, helps[key])


def test_demo_epochs_help_states_the_shipped_configs_epochs() -> None:
    """`wsol demo --epochs` said "default: the demo's", a number the user could not find; it names the configs' counts."""
    from wsol.config import configs_dir, load_config

    natural = load_config(configs_dir() / "shapes_small-cnn-bn_natural.yaml")
    art = load_config(configs_dir() / "shapes_small-cnn-bn_art.yaml")
    text = {p.opts[0]: p.help for p in dict(_commands())["wsol demo"].params}["--epochs"]
    assert f"(default: its config's, {natural.epochs})" in text and art.epochs - art.warmup_epochs == 1 and "one ART epoch" in text, text


def test_budget_option_help_names_the_attacks_each_option_changes() -> None:
    """--n-iter, --n-restarts and --n-queries each name in --help the attacks they change (OVERRIDE_USERS) and the one
    they leave alone, so a user who shrinks --n-iter for a first try knows that Square keeps its 5,000 queries."""
    from wsol.attacks.autoattack import OVERRIDE_EXCEPTIONS, OVERRIDE_USERS

    helps = {(path, param.opts[0]): param.help for path, cmd in _commands() for param in cmd.params if "robustness" in path}
    for key, users in OVERRIDE_USERS.items():
        texts = [text for (path, opt), text in helps.items() if opt == f"--{key.replace('_', '-')}"]
        assert len(texts) == 3, (key, helps.keys())
        for text in texts:
            assert all(a in text for a in users), (key, text)
            assert all(a in text for k, a in OVERRIDE_EXCEPTIONS if k == key), (key, text)
    assert all("--n-queries" in text for (path, opt), text in helps.items() if opt == "--n-iter")


def test_ctrl_c_says_what_was_kept_and_exits_130(monkeypatch, capsys, tmp_path) -> None:
    import wsol.data.shapes as shapes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "synthesize_shapes", interrupted)
    assert run(["data", "synth", "shapes", "--out", str(tmp_path / "s")]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {INTERRUPTED}"]
    assert "localize, attacks" in INTERRUPTED  # localize resumes from <out>.partial/ too; the line left it out


def test_train_options_that_default_to_the_config_say_so() -> None:
    """`wsol train --help` shows no default for these (the value comes from the YAML), so the help must say where it comes from."""
    train = dict(_commands())["wsol train"]
    helps = {p.opts[0]: p.help for p in train.params}
    for name in ("--method", "--arch", "--epochs", "--batch-size", "--lr", "--seed", "--warmup-epochs", "--weights"):
        assert "default: the config's" in helps[name], (name, helps[name])


def test_targeted_n_maps_help_does_not_send_users_to_a_report_that_refuses_targeted_runs() -> None:
    """`wsol report figures` refuses targeted run folders, so the targeted attack's --n-maps must not point there."""
    helps = {path: {p.opts[0]: p.help for p in cmd.params} for path, cmd in _commands()}
    assert "reads attribution runs only" in helps["wsol attack targeted"]["--n-maps"]
    assert helps["wsol attack attribution"]["--n-maps"].endswith("for `wsol report figures`.")


def test_the_attacks_eps_help_speaks_of_linf_alone() -> None:
    """`wsol attack attribution/targeted --eps` told of ℓ2 radii, which these ℓ∞-only attacks (no --norm) do not take."""
    helps = [param.help for path, cmd in _commands() if path.startswith("wsol attack") for param in cmd.params if param.opts[0] == "--eps"]
    assert len(helps) == 2 and all("l2" not in text and text.startswith("ℓ∞") for text in helps), helps


def test_robustness_batch_size_help_says_it_is_part_of_the_run() -> None:
    """In the robustness commands --batch-size is the chunk a run resumes by and AutoAttack's batching: not a free knob."""
    found = 0
    for path, cmd in _commands():
        if " robustness " in f"{path} ":
            help_text = next(p.help for p in cmd.params if p.opts[0] == "--batch-size")
            assert "another --batch-size into the same --out is refused" in help_text, path
            found += 1
    assert found == 3


def test_robustness_help_says_how_to_name_the_model() -> None:
    """The study's YAML argument said "name + weights file(s)": neither the 'models:' key nor the 'model' key a RobustBench entry
    needs; --model did not say that it or --checkpoint is needed."""
    helps = {(path, p.opts[0] if p.opts else p.name): p.help for path, cmd in _commands() if "robustness" in path for p in cmd.params}
    assert "'models:', a list of {name, model, weights}" in helps[("wsol robustness study", "models")]
    assert "{name, checkpoint}" in helps[("wsol robustness study", "models")]
    for command in ("evaluate", "per-class"):
        assert "or --checkpoint, not both" in helps[(f"wsol robustness {command}", "--model")]
