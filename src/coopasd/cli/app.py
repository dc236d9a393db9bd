"""The ``coopasd`` application: registers the commands and turns errors into one line."""

from __future__ import annotations

import sys

import typer

from coopasd.cli.baseline import baseline
from coopasd.cli.certs import certs
from coopasd.cli.compare import compare
from coopasd.cli.console import err_console, setup_logging
from coopasd.cli.demo import demo
from coopasd.cli.evaluate import evaluate
from coopasd.cli.export import export
from coopasd.cli.federate import federate
from coopasd.cli.pretrain import pretrain_command
from coopasd.cli.report import report
from coopasd.cli.score import score
from coopasd.cli.serve import serve
from coopasd.cli.synth import synth
from coopasd.cli.train import train
from coopasd.errors import CoopasdError

app = typer.Typer(
    help="Cooperative machine anomalous sound detection: factories train one detector together.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


for command in (synth, baseline, train, federate, compare, evaluate, score, serve, export, report, demo, certs):
    app.command()(command)
app.command("pretrain")(pretrain_command)


def main() -> None:
    """Console entry point: a CoopasdError becomes one red line and exit code 2."""
    try:
        app(standalone_mode=False)
    except CoopasdError as err:
        err_console.print(f"[bold red]error:[/bold red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.BadParameter, typer.Exit) as err:
        if isinstance(err, typer.Exit):
            sys.exit(err.exit_code)
        err_console.print(f"[bold red]error:[/bold red] {err}")
        sys.exit(2)
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
