"""The printed config table of ``coopasd config show``: values whole, only the prose wraps."""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coopasd.config.describe import CONFIG_COLUMNS, config_rows
from coopasd.config.settings import RunConfig


def config_table(config: RunConfig) -> Table:
    """Every key with its value, default, unit and meaning (bold with ``*``: differs from the default).

    Keys, values, defaults and units never wrap (a path must stay one copyable piece); the meaning does.
    """
    rows = config_rows(config)
    table = Table(caption="* differs from the default", box=box.SIMPLE_HEAD)
    for i, name in enumerate(CONFIG_COLUMNS):
        whole = max(cell_len(r[i]) for r in rows if i < len(r)) if name != "meaning" else None
        table.add_column(name, no_wrap=whole is not None, min_width=whole, overflow="fold")
    for row in rows:  # a section row has one cell
        table.add_row(*map(Text, row), style="bold cyan" if len(row) == 1 else "bold" if row[0][0] == "*" else None)
    return table


def print_config(console: Console, config: RunConfig, source: str) -> None:
    """Print the title line and :func:`config_table`, wider than the terminal where a value needs it."""
    console.print(Text(f"effective config: {source}", style="italic"), soft_wrap=True)  # a long path stays whole
    table = config_table(config)
    needed = console.measure(table, options=console.options.update_width(1 << 16)).minimum
    if needed > console.width:  # wider lines than the terminal (it wraps them softly) rather than cut values
        table.width = needed
    console.print(table, crop=False)
