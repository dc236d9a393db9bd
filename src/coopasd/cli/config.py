"""``coopasd config show``: the effective config, every key with its value, default, unit and meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from coopasd.config.describe import commented_toml
from coopasd.config.settings import load_config
from coopasd.report.config_table import print_config
from coopasd.report.console import console

config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)


@config_app.command("show")
def show(
    config: Path | None = typer.Option(None, "--config", help="TOML config file (default: the built-in defaults)."),
    output: Literal["table", "toml"] = typer.Option("table", "--format", help="toml: commented, a valid --config."),
) -> None:
    """Print every key: its value, default, unit and meaning (* and bold: differs from the default)."""
    cfg, source = load_config(config), str(config or "built-in defaults")
    header = f"coopasd run config: {source}\n[unit] and meaning after each key"
    if output == "toml":
        return typer.echo(commented_toml(cfg, header), nl=False)
    print_config(console, cfg, source)
