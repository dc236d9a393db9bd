"""The only writer of result files: run directories (every mode the same way), factory models, a
factory's own folder in a federated run, federation.json, comparison, plots, HTML, the
pre-trained backbone and its record. It also reads back what it wrote where a run needs it.

Every file is written atomically (temporary file + rename), so an interrupted run never
leaves a half-written result behind.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from coopasd.atomic import write_atomic
from coopasd.config import RunConfig, to_toml
from coopasd.data.layout import Clip
from coopasd.detect import FactoryModel, section_key
from coopasd.errors import SubmissionError
from coopasd.evaluation import ScoredRun, decision_file_name, read_submission, score_file_name
from coopasd.results import Comparison, FactoryResult, ModeResult

FEDERATION_FILE = "federation.json"  # the server's result in its run directory
FACTORY_MODEL_FILE = "model.pt"  # a federated factory's detector, in its own folder
FACTORY_RECORD_FILE = "factory.json"  # a federated factory's skipped clips, in its own folder


def _csv_text(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_submission(
    run_dir: Path,
    machine_type: str,
    section: str,
    names: Sequence[str],
    scores: np.ndarray,
    decisions: np.ndarray,
) -> None:
    """DCASE submission files of one section: anomaly scores and 0/1 decisions, no header."""
    sub = Path(run_dir) / "submission"
    write_atomic(
        sub / score_file_name(machine_type, section),
        _csv_text(list(zip(names, map(float, scores), strict=True))),
    )
    write_atomic(
        sub / decision_file_name(machine_type, section),
        _csv_text(list(zip(names, map(int, decisions), strict=True))),
    )


def write_json(path: Path, payload: dict) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SubmissionError(f"{path}: cannot read ({err})") from err


def save_model(path: Path, model: FactoryModel) -> Path:
    """A factory's detector as one file (loadable alone with :meth:`FactoryModel.load`)."""
    return write_atomic(path, model.to_bytes())


def write_files(files: dict[Path, bytes]) -> list[Path]:
    """Several whole files (e.g. an exported model), each written atomically; returns their paths."""
    return [write_atomic(path, data) for path, data in files.items()]


def _write_sections(run_dir: Path, run: ScoredRun) -> None:
    for sec in run.sections:
        write_submission(run_dir, sec.machine_type, sec.section, [c.name for c in sec.clips], sec.scores, sec.decisions)


def write_factory_result(folder: Path, result: FactoryResult) -> None:
    """A federated factory's own folder: its submission files, its detector and its skipped clips."""
    _write_sections(folder, ScoredRun(result.sections, result.skipped))
    save_model(Path(folder) / FACTORY_MODEL_FILE, result.model)
    write_json(Path(folder) / FACTORY_RECORD_FILE, {"factory": result.name, "skipped_clips": result.skipped})


def read_factory_result(folder: Path, clips: Sequence[Clip]) -> FactoryResult:
    """What :func:`write_factory_result` wrote, with the scored clips matched to ``clips``."""
    folder = Path(folder)
    model = FactoryModel.load(folder / FACTORY_MODEL_FILE)
    record = read_json(folder / FACTORY_RECORD_FILE)
    run = read_submission(folder / "submission", clips, require_all=False)
    for sec in run.sections:
        sec.threshold = model.detectors[section_key(sec.machine_type, sec.section)].threshold
    return FactoryResult(model, run.sections, list(record["skipped_clips"]))


def metrics_rows(summary: dict) -> list[list[object]]:
    """Per machine rows plus the DCASE arithmetic- and harmonic-mean rows."""
    rows: list[list[object]] = [["machine_type", "auc_source", "auc_target", "pauc", "official_score"]]
    for machine, m in summary["machines"].items():
        rows.append([machine, m["auc_source"], m["auc_target"], m["pauc"], m["official_score"]])
    a, h = summary["arithmetic_mean"], summary["harmonic_mean"]
    rows.append(["arithmetic mean", a["auc_source"], a["auc_target"], a["pauc"], a["all"]])
    rows.append(["harmonic mean", h["auc_source"], h["auc_target"], h["pauc"], summary["official_score"]])
    return rows


def write_metrics(run_dir: Path, summary: dict) -> None:
    """``metrics.json`` and ``metrics.csv`` of a run directory."""
    write_json(Path(run_dir) / "metrics.json", summary)
    rows = metrics_rows(summary)
    formatted = [rows[0]] + [[r[0], *(f"{float(v):.4f}" for v in r[1:])] for r in rows[1:]]
    write_atomic(Path(run_dir) / "metrics.csv", _csv_text(formatted))


def metrics_table(summary: dict, title: str = "DCASE 2023 Task 2 metrics") -> Table:
    """A rich table of the per-machine values and the mean rows."""
    table = Table(title=title)
    rows = metrics_rows(summary)
    for i, name in enumerate(rows[0]):
        table.add_column(str(name).replace("_", " "), justify="left" if i == 0 else "right")
    for row in rows[1:]:
        style = "bold" if row[0] == "harmonic mean" else None
        table.add_row(str(row[0]), *(f"{100 * float(v):.2f}" for v in row[1:]), style=style)
    table.caption = "values in %; official score = harmonic mean of all AUC(source), AUC(target), pAUC"
    return table


def plot_scores(run_dir: Path, sections: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """Histogram of anomaly scores per machine (normal vs anomalous, by domain) as one PNG.

    ``sections``: (title, scores, is_anomaly, is_target) per machine type and section.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(sections)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, scores, anomaly, target) in zip(axes.flat, sections, strict=False):
        bins = np.linspace(float(np.min(scores)), float(np.max(scores)) + 1e-9, 30)
        for mask, label, color in (
            (~anomaly & ~target, "normal (source)", "tab:blue"),
            (~anomaly & target, "normal (target)", "tab:cyan"),
            (anomaly, "anomalous", "tab:red"),
        ):
            if mask.any():
                ax.hist(scores[mask], bins=bins, alpha=0.55, label=label, color=color)
        ax.set_title(title)
        ax.set_xlabel("anomaly score")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return write_atomic(Path(run_dir) / "scores.png", buffer.getvalue())


def write_html(run_dir: Path, summary: dict, title: str, notes: Sequence[str] = (), images: Sequence[str] = ()) -> Path:
    """A self-contained report page: notes, the metrics table, and images beside it."""
    rows = metrics_rows(summary)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(str(r[0]))}</td>"
        + "".join(f"<td>{100 * float(v):.2f}</td>" for v in r[1:])
        + "</tr>"
        for r in rows[1:]
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    img_html = "".join(f'<p><img src="{html.escape(i)}" alt="{html.escape(i)}"></p>' for i in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}
tr:last-child{{font-weight:bold}}</style></head><body>
<h1>{html.escape(title)}</h1><ul>{note_html}</ul>
<p>Official score (harmonic mean of all AUC(source), AUC(target), pAUC):
<b>{100 * summary["official_score"]:.2f}%</b></p>
<table><tr>{head}</tr>{body}</table>{img_html}</body></html>
"""
    return write_atomic(Path(run_dir) / "report.html", page)


def run_notes(result: ModeResult, cfg: RunConfig, data_dir: Path) -> list[str]:
    """The report's lines about how a run was made."""
    label = "federated (Flower Simulation Engine)" if result.mode == "federated" else result.mode
    notes = [f"mode: {label}", f"data: {data_dir}"]
    if "encoder_start" in result.extra:
        notes.append(f"encoder start: {result.extra['encoder_start']}")
    if result.mode == "baseline":
        notes.append("detector: log-mel statistics + Euclidean kNN (non-learned baseline)")
    else:
        notes.append(
            f"detector: {cfg.detect.features} kNN (k={cfg.detect.k}), "
            f"embedding {cfg.model.pooling} of layer {cfg.model.layer}"
        )
    if result.models:
        notes.append("factories: " + ", ".join(f"{m.name} ({', '.join(sorted(m.detectors))})" for m in result.models))
    if result.mode == "federated":
        fed = cfg.federation
        notes.append(
            f"strategy: {fed.strategy}, shared: {fed.share}, rounds: {fed.rounds}, local epochs: {fed.local_epochs}"
        )
        notes.append("the server received parameters and metric values only")
    if result.run.skipped:
        notes.append(f"{len(result.run.skipped)} unreadable clip(s) skipped")
    return notes


def write_run(run_dir: Path, result: ModeResult, cfg: RunConfig, data_dir: Path) -> dict | None:
    """A whole run directory, the same for every mode: config, submission, models, metrics, plots,
    HTML. Returns the metrics summary, or None where every test label is hidden."""
    run_dir = Path(run_dir)
    write_atomic(run_dir / "config.toml", to_toml(cfg))
    _write_sections(run_dir, result.run)
    for model in result.models:
        save_model(run_dir / "models" / f"{model.name}.pt", model)
    summary = result.summary()
    if summary is None:
        return None
    write_metrics(run_dir, summary)
    images = []
    if summary.get("rounds"):
        plot_rounds(run_dir, summary["rounds"])
        images.append("rounds.png")
    write_report(run_dir, result.run, summary, f"coopasd {result.mode}", run_notes(result, cfg, data_dir), images)
    return summary


def write_comparison(out: Path, comparison: Comparison, cfg: RunConfig, data_dir: Path) -> dict:
    """``comparison.json``, the per-round plot with the reference modes, and the combined report."""
    summary = comparison.summary()
    write_json(Path(out) / "comparison.json", summary)
    modes = comparison.summaries()
    plot_rounds(
        out,
        summary["rounds"],
        {"centralized": modes["centralized"]["official_score"], "local-only": modes["local"]["official_score"]},
    )
    fed = cfg.federation
    notes = [
        f"data: {data_dir}",
        f"encoder start: {modes['federated']['encoder_start']}",
        f"federated: {fed.strategy}, {fed.rounds} rounds x {fed.local_epochs} "
        f"local epochs, shared: {fed.share}; centralized and local-only: {cfg.train.epochs} epochs",
        f"federated vs centralized: {summary['federated_vs_centralized_percent']:+.2f}% ; "
        f"federated vs local-only: {summary['federated_vs_local_points']:+.2f} points",
        "bytes per model transfer: "
        + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in summary["bytes_per_transfer"].items()),
    ]
    write_comparison_html(out, modes, notes, ["rounds.png"])
    return summary


def write_pretrained(out: Path, checkpoint: bytes, meta: dict) -> dict:
    """The pre-trained backbone and its record ``<out>.json`` (meta plus the file's sha256); returns the record."""
    record = meta | {"sha256": hashlib.sha256(checkpoint).hexdigest()}
    write_atomic(Path(out), checkpoint)
    write_json(Path(out).with_suffix(".json"), record)
    return record


def write_report(
    run_dir: Path, run: ScoredRun, summary: dict, title: str, notes: Sequence[str] = (), images: Sequence[str] = ()
) -> Path:
    """Score histograms and the HTML page of a run whose labels are known."""
    plotted = [
        (
            f"{s.machine_type} section {s.section}",
            np.asarray(s.scores),
            np.array([c.label == "anomaly" for c in s.clips]),
            np.array([c.domain == "target" for c in s.clips]),
        )
        for s in run.sections
        if s.evaluable
    ]
    plot_scores(run_dir, plotted)
    return write_html(run_dir, summary, title, notes, images=[*images, "scores.png"])


def plot_rounds(run_dir: Path, rounds: Sequence[dict], references: dict[str, float] | None = None) -> Path:
    """Per-round federated official score, with horizontal lines for reference modes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    points = [(r["round"], r["official_score"]) for r in rounds if r.get("official_score") is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, [100 * y for y in ys], marker="o", label="federated")
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-."), strict=False):
        ax.axhline(100 * value, linestyle=style, color="gray", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("official score (%)")
    ax.set_title("federated official score per round")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return write_atomic(Path(run_dir) / "rounds.png", buffer.getvalue())


def comparison_rows(modes: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Per machine AUC(source), AUC(target), pAUC, official for each mode, plus fed-vs-central and fed-vs-local."""
    names = list(modes)
    machines = sorted(next(iter(modes.values()))["machines"])
    header = ["machine", "metric", *names]
    if {"federated", "centralized"} <= set(names):
        header.append("fed vs central")
    if {"federated", "local"} <= set(names):
        header.append("fed vs local")
    rows: list[list[str]] = []

    def add(label: str, metric: str, values: dict[str, float]) -> None:
        row = [label, metric, *(f"{100 * values[n]:.2f}" for n in names)]
        if "fed vs central" in header:
            row.append(f"{100 * (values['federated'] - values['centralized']) / values['centralized']:+.2f}%")
        if "fed vs local" in header:
            row.append(f"{100 * (values['federated'] - values['local']):+.2f} pt")
        rows.append(row)

    for m in machines:
        for metric in ("auc_source", "auc_target", "pauc", "official_score"):
            add(m, metric, {n: modes[n]["machines"][m][metric] for n in names})
    add("all", "official_score", {n: modes[n]["official_score"] for n in names})
    return header, rows


def comparison_table(modes: dict[str, dict]) -> Table:
    header, rows = comparison_rows(modes)
    table = Table(title="federated vs centralized vs local-only (values in %)")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row, style="bold" if row[0] == "all" else None)
    return table


def write_comparison_html(run_dir: Path, modes: dict[str, dict], notes: Sequence[str], images: Sequence[str]) -> Path:
    header, rows = comparison_rows(modes)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    img_html = "".join(f'<p><img src="{html.escape(i)}" alt="{html.escape(i)}"></p>' for i in images)
    links = "".join(f'<li><a href="{m}/report.html">{m}</a></li>' for m in modes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>coopasd comparison</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}
tr:last-child{{font-weight:bold}}</style></head><body><h1>Federated vs centralized vs local-only</h1>
<ul>{note_html}</ul><table><tr>{head}</tr>{body}</table>{img_html}<h2>Per-mode reports</h2><ul>{links}</ul>
</body></html>
"""
    return write_atomic(Path(run_dir) / "report.html", page)
