"""The ``coopasd`` application: registers the commands (each imports torch etc. only when it runs); errors: one line."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape

from coopasd.cli.config import config_app
from coopasd.errors import CoopasdError, Interrupted
from coopasd.report.console import err_console, setup_logging
from coopasd.rundir.environment import version_text

app = typer.Typer(
    help="Cooperative machine anomalous sound detection: factories train one detector together.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _global(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show versions, exit."),
) -> None:
    setup_logging(verbose)


COMMANDS = "synth baseline train federate compare evaluate score serve export report demo certs gateway pretrain"
for name in COMMANDS.split():  # each module's function of the command's name
    module = importlib.import_module(f"coopasd.cli.{name}")
    app.command(name)(getattr(module, name if hasattr(module, name) else f"{name}_command"))
app.add_typer(config_app, name="config")


def main() -> None:
    """Console entry point: a CoopasdError or a bad flag becomes one red line and exit code 2."""
    import click

    try:
        app(standalone_mode=False)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (CoopasdError, typer.BadParameter) as err:
        message = err.format_message() if isinstance(err, typer.BadParameter) else str(err)
        err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
        err.exit() if isinstance(err, Interrupted) else sys.exit(2)  # Ctrl-C: 130, without waiting for threads
    except click.ClickException as err:  # other usage errors
        err.show()
        sys.exit(err.exit_code)
