"""The `wsol` command line: parse options, build a config, call the library. No logic here."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

import wsol
from wsol.errors import WsolError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Attributional robustness and weakly supervised localization.")
data_app = typer.Typer(no_args_is_help=True, help="Generate, check and look at datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wsol {wsol.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """wsol: train robust classifiers, turn attributions into boxes and masks, and score them."""


# --- foundation commands ---


@app.command("models")
def models_command() -> None:
    """List the architectures `--arch` accepts."""
    from wsol.models.build import MODELS, arch_spec

    for name in MODELS.names():
        spec = arch_spec(name)
        typer.echo(f"{name:<16} input {spec.input_size:>3}px  {spec.description}")


@config_app.command("show")
def config_show(
    file: Annotated[Optional[Path], typer.Argument(help="YAML config; omit for the defaults.")] = None,
    overrides: Annotated[Optional[List[str]], typer.Option("--set", help="Override a key, e.g. --set art.lam=0.3")] = None,
) -> None:
    """Print the resolved, validated configuration."""
    from wsol.config import config_to_yaml, load_config, parse_override

    typer.echo(config_to_yaml(load_config(file, dict(parse_override(o) for o in overrides or []))), nl=False)


# --- data commands ---


# --- train commands ---


# --- localize commands ---


def run(argv: Optional[List[str]] = None) -> int:
    """Run the CLI on ``argv`` and return the exit status; user errors print one line, status 2."""
    import click

    try:
        result = app(args=argv, standalone_mode=False, prog_name="wsol")
    except WsolError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except click.exceptions.Exit as ex:
        return ex.exit_code
    except click.ClickException as ex:
        ex.show()
        return ex.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(run())
