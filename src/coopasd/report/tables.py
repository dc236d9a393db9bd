"""The console tables: a run's metrics and the three modes compared (rich)."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from coopasd.dcase.results import MODES, compare_modes
from coopasd.rundir.writer import metrics_rows


def round_line(entry: dict) -> str:
    """One federated round in a line: who answered, training and evaluation time, the server's
    (self-reported) score and the factories whose own values lift it, the rejected factories."""
    line = f"round {entry['round']}: {entry['answered']}/{entry['asked']} factories, {entry['seconds']:.0f} s training"
    if "evaluate_seconds" in entry:
        line += f", {entry['evaluate_seconds']:.0f} s evaluation"
    if not entry.get("aggregated", True):
        line += f", not aggregated ({entry.get('not_aggregated', 'too few valid updates')})"
    if entry.get("official_score") is not None:
        lifted = entry.get("official_score_lifted_by") or {}
        lifts = "".join(f"; {name} lifts it {100 * lift:.1f} points" for name, lift in sorted(lifted.items()))
        line += f", official score {100 * entry['official_score']:.2f} (self-reported{lifts})"
    rejected = sorted(entry.get("rejected", {}))
    return line + (f", rejected: {', '.join(rejected)}" if rejected else "")


def metrics_table(summary: dict, title: str = "DCASE 2023 Task 2 metrics") -> Table:
    """A rich table of the per-machine values and the mean rows."""
    table = Table(title=Text(title))  # Text: a path in the title is not read as markup
    rows = metrics_rows(summary)
    for i, name in enumerate(rows[0]):
        table.add_column(str(name).replace("_", " "), justify="left" if i == 0 else "right", overflow="fold")
    for row in rows[1:]:
        style = "bold" if row[0] == "harmonic mean" else None
        table.add_row(escape(str(row[0])), *(f"{100 * float(v):.2f}" for v in row[1:]), style=style)
    table.caption = "values in %; official score = harmonic mean of all AUC(source), AUC(target), pAUC"
    return table


METRIC_LABELS = {"auc_source": "AUC source", "auc_target": "AUC target", "pauc": "pAUC", "official_score": "hmean"}


VS_CENTRAL = "fed vs central (%)"  # relative difference, in % of the centralized value


VS_LOCAL = "fed vs local (pt)"  # absolute difference, in percentage points


def comparison_rows(modes: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Per machine AUC(source), AUC(target), pAUC, hmean for each mode (in %), plus federated vs centralized
    (relative, in % of centralized) and federated vs local-only (absolute, in percentage points), as
    :func:`coopasd.dcase.results.compare_modes` computes them; then each factory's official score over its own
    units, with its gain from joining (points vs its local-only model)."""
    compared = compare_modes(modes)
    header = ["machine", "metric", *MODES, VS_CENTRAL, VS_LOCAL]

    def row(label: str, metric: str, values: list[float], diff: dict) -> list[str]:
        vs_central, vs_local = diff["vs_centralized_percent"], diff["vs_local_points"]
        return [label, metric, *(f"{100 * v:.2f}" for v in values), f"{vs_central:+.2f}%", f"{vs_local:+.2f} pt"]

    rows = [
        row(m, label, [modes[n]["machines"][m][metric] for n in MODES], compared["differences"][m][metric])
        for m in sorted(compared["differences"])
        for metric, label in METRIC_LABELS.items()
    ]
    overall = {
        "vs_centralized_percent": compared["federated_vs_centralized_percent"],
        "vs_local_points": compared["federated_vs_local_points"],
    }
    rows.append(row("all", "official", [modes[n]["official_score"] for n in MODES], overall))
    for name, f in compared.get("factories", {}).items():  # what joining gave each factory (its own units)
        gain = {
            "vs_centralized_percent": 100 * (f["federated"] / f["centralized"] - 1),
            "vs_local_points": f["gain_points"],
        }
        rows.append(row(f"factory {name}", "official, own units", [f[n] for n in MODES], gain))
    return header, rows


def comparison_table(modes: dict[str, dict]) -> Table:
    """The comparison as a rich table that folds, never cuts, cells and headers on a narrow terminal."""
    header, rows = comparison_rows(modes)
    table = Table(
        title="federated vs centralized vs local-only (values in %)",
        caption="fed vs central: relative, in % of centralized; fed vs local: absolute, in percentage points",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for i, name in enumerate(header):
        label = name.replace("fed vs ", "fed vs\n")
        table.add_column(label, justify="left" if i < 2 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(escape(c) for c in row), style="bold" if row[0] == "all" else None)
    return table
