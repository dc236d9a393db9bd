"""``coopasd config show``: the effective config, every key with its value, default, unit and meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from coopasd.config.describe import CONFIG_COLUMNS, commented_toml, config_rows
from coopasd.config.settings import load_config
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
    table = Table(title=Text(f"effective config: {source}"), caption="* differs from the default", box=box.SIMPLE_HEAD)
    for name in CONFIG_COLUMNS:
        table.add_column(name, overflow="fold")
    for row in config_rows(cfg):  # a section row has one cell
        table.add_row(*map(Text, row), style="bold cyan" if len(row) == 1 else "bold" if row[0][0] == "*" else None)
    console.print(table)
