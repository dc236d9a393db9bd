"""The HTML report page, as one self-contained string: plain-language header, tables, inlined figures,
what was shared, provenance. Pure functions of the run's summaries (``metrics.json``,
``comparison.json``) and figures; :mod:`coopasd.rundir.writer` writes the file.

Every number in a table cell carries ``data-src``: its path in the summary the page was made from
(``machines/fan/auc_source``), so a test (or a reader) can check the page against the JSON.
Fractions are shown in % with two decimals; differences already in % or points keep their unit.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coopasd.config.settings import RunConfig, detector_members
from coopasd.data.partition import factories_of
from coopasd.errors import ConfigError

METRIC_LABELS = {
    "auc_source": "AUC, source domain",
    "auc_target": "AUC, target domain",
    "pauc": "pAUC",
    "official_score": "official score",
}
MODE_NAMES = {"federated": "federated", "centralized": "centralized", "local": "local-only", "baseline": "floor"}
HOW_TO_READ = (
    "How to read the numbers: AUC is the chance that an anomalous clip scores higher than a normal one "
    "(50% = guessing, 100% = perfect), measured separately for the source domain (the usual operating "
    "conditions) and the target domain (changed conditions with few training clips). pAUC is the same, "
    "restricted to low false-alarm rates (at most 10% of normal clips flagged). The official score is the "
    "harmonic mean of all AUC and pAUC values of all machine types (DCASE 2023 Task 2)."
)
STAYED = [
    "audio recordings, their log-mel features and embeddings",
    "clip names and labels",
    "the classification (margin) head of each factory",
    "memory banks of normal clips (the detector itself)",
    "decision thresholds",
    "anomaly scores and alarms (the submission files)",
]
SHARED = {
    "encoder": "all encoder parameters",
    "no_norm": "the encoder parameters except its LayerNorms (FedBN-style)",
    "lora": "only the encoder's LoRA adapter weights (the backbone stays frozen)",
}
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.lede{background:#f4f7fb;border-left:4px solid #1f77b4;padding:.6em 1em;margin:1em 0}
.lede p{margin:.3em 0}.verdict{font-size:1.1em;font-weight:600}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:3px 9px}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:bold;background:#fafafa}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#555;padding-top:.3em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.cols{display:flex;gap:2em;flex-wrap:wrap}.cols>div{flex:1;min-width:300px}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}
.muted{color:#666;font-size:.9em}"""


@dataclass(frozen=True)
class Num:
    """A table cell holding a number: its text and where it comes from in the page's JSON."""

    text: str
    src: str


@dataclass(frozen=True)
class Figure:
    """A figure of the page: a heading, the PNG bytes and a caption; ``name`` is its file stem."""

    name: str
    heading: str
    png: bytes
    caption: str


Cell = str | Num


def pct(value: float, src: str) -> Num:
    """A fraction shown in % with two decimals."""
    return Num(f"{100 * float(value):.2f}", src)


def signed(value: float, src: str, unit: str) -> Num:
    """A difference already in % or points, with its sign and unit."""
    return Num(f"{float(value):+.2f} {unit}", src)


def esc(text: object) -> str:
    return html.escape(str(text))


def table(header: Sequence[str], rows: Sequence[Sequence[Cell]], caption: str = "", total_rows: int = 0) -> str:
    """An HTML table; the last ``total_rows`` rows are emphasised."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num" data-src="{esc(c.src)}">{esc(c.text)}</td>'
            if isinstance(c, Num)
            else f"<td>{esc(c)}</td>"
            for c in row
        )
        total = ' class="total"' if i >= len(rows) - total_rows else ""
        body.append(f"<tr{total}>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f'<h2>{esc(fig.heading)}</h2><figure><img alt="{esc(fig.heading)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(fig.caption)}</figcaption></figure>"
    )


def _list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def metrics_table(summary: Mapping) -> str:
    """Per machine type AUC(source), AUC(target), pAUC and official score, plus the mean rows."""
    rows: list[list[Cell]] = []
    for machine, m in summary["machines"].items():
        rows.append([machine, *(pct(m[k], f"machines/{machine}/{k}") for k in METRIC_LABELS)])
    a, h = summary["arithmetic_mean"], summary["harmonic_mean"]
    rows.append(
        ["arithmetic mean", *(pct(a[k], f"arithmetic_mean/{k}") for k in ("auc_source", "auc_target", "pauc", "all"))]
    )
    rows.append(
        [
            "harmonic mean (official)",
            *(pct(h[k], f"harmonic_mean/{k}") for k in ("auc_source", "auc_target", "pauc")),
            pct(summary["official_score"], "official_score"),
        ]
    )
    header = ["machine type", *(f"{v} (%)" for v in METRIC_LABELS.values())]
    caption = "Official score of a machine type: harmonic mean of its AUC (source), AUC (target) and pAUC values."
    return table(header, rows, caption, total_rows=1)


def decisions_table(machines: Mapping, prefix: str = "") -> str:
    """Per machine type, section and domain: pAUC of that domain, and precision, recall, F1 of the alarms."""
    rows: list[list[Cell]] = []
    for machine, m in machines.items():
        for section, s in m.get("sections", {}).items():
            for domain in ("source", "target"):
                if f"pauc_{domain}" not in s:
                    continue
                base = f"{prefix}machines/{machine}/sections/{section}"
                cells: list[Cell] = [
                    machine,
                    f"section {section}",
                    domain,
                    pct(s[f"pauc_{domain}"], f"{base}/pauc_{domain}"),
                ]
                for key in ("precision", "recall", "f1"):
                    name = f"{key}_{domain}"
                    cells.append(pct(s[name], f"{base}/{name}") if name in s else "n/a")
                rows.append(cells)
    if not rows:
        return ""
    header = ["machine type", "section", "domain", "pAUC of the domain (%)", "precision (%)", "recall (%)", "F1 (%)"]
    caption = (
        "Alarms are the 0/1 decisions of the submission files (score above the decision threshold). Precision: share "
        "of alarms that were real anomalies; recall: share of anomalies that raised an alarm; F1: their harmonic mean; "
        "all on that domain's clips, as the official DCASE evaluator computes them. pAUC of the domain: that domain's "
        "normal clips against all anomalous clips (extra, not part of the official score)."
    )
    return table(header, rows, caption)


def comparison_table(summary: Mapping) -> str:
    """Federated / centralized / local-only (and the floor) per machine type and metric, with the differences."""
    modes = summary["modes"]
    floor = summary.get("floor")
    names = [m for m in ("federated", "centralized", "local") if m in modes]
    header = ["machine type", "metric", *(f"{MODE_NAMES[n]} (%)" for n in names)]
    if floor:
        header.append("floor, no training (%)")
    header += ["federated vs centralized (% change)", "federated vs local-only (points)"]
    rows: list[list[Cell]] = []
    for machine in modes["federated"]["machines"]:
        for metric, label in METRIC_LABELS.items():
            row: list[Cell] = [machine, label]
            row += [pct(modes[n]["machines"][machine][metric], f"modes/{n}/machines/{machine}/{metric}") for n in names]
            if floor:
                known = machine in floor["machines"]
                row.append(
                    pct(floor["machines"][machine][metric], f"floor/machines/{machine}/{metric}") if known else "n/a"
                )
            diff = summary["differences"][machine][metric]
            base = f"differences/{machine}/{metric}"
            row += [
                signed(diff["vs_centralized_percent"], f"{base}/vs_centralized_percent", "%"),
                signed(diff["vs_local_points"], f"{base}/vs_local_points", "pt"),
            ]
            rows.append(row)
    total: list[Cell] = ["all machine types", "official score"]
    total += [pct(modes[n]["official_score"], f"modes/{n}/official_score") for n in names]
    if floor:
        total.append(pct(floor["official_score"], "floor/official_score"))
    total += [
        signed(summary["federated_vs_centralized_percent"], "federated_vs_centralized_percent", "%"),
        signed(summary["federated_vs_local_points"], "federated_vs_local_points", "pt"),
    ]
    rows.append(total)
    caption = (
        "% change = (federated - centralized) / centralized: negative means federated lost that share of the "
        "centralized value. Points = federated - local-only in percentage points: positive means cooperation "
        "gained over training alone."
    )
    return table(header, rows, caption, total_rows=1)


def factory_gain_table(summary: Mapping) -> str:
    """What joining gave each factory: its units and official score per mode, and its gain in points
    over its own local-only model ('' for comparisons that predate per-factory scores)."""
    factories = summary.get("factories")
    if not factories:
        return ""
    header = ["factory", "units", *(f"{MODE_NAMES[m]} (%)" for m in ("federated", "centralized", "local"))]
    header += ["gain from joining (points vs its local-only model)", "federated vs centralized (points)"]
    rows: list[list[Cell]] = []
    for name, f in factories.items():
        row: list[Cell] = [name, ", ".join(f["units"])]
        row += [pct(f[m], f"factories/{name}/{m}") for m in ("federated", "centralized", "local")]
        row += [
            signed(f["gain_points"], f"factories/{name}/gain_points", "pt"),
            signed(f["vs_centralized_points"], f"factories/{name}/vs_centralized_points", "pt"),
        ]
        rows.append(row)
    caption = (
        "A factory's score is the official score (harmonic mean of AUC source, AUC target and pAUC) over its own "
        "units only. Gain from joining = its federated score - the score of the model it trains alone, in points."
    )
    return table(header, rows, caption)


def factory_names(summary: Mapping, cfg: RunConfig | None) -> list[str]:
    """The factories of a run: the federated server's list, else the partition of its config."""
    if isinstance(summary.get("factories"), list):
        return [str(f) for f in summary["factories"]]
    try:
        pairs = ((m, s) for m, v in summary["machines"].items() for s in v.get("sections", {"00": None}))
        return [f.name for f in factories_of(cfg.partition.factories if cfg else "", pairs)]
    except ConfigError:
        return []


def clip_counts(machines: Mapping) -> tuple[int, int]:
    """(test clips, anomalous test clips) over all sections."""
    sections = [s for m in machines.values() for s in m.get("sections", {}).values()]
    return sum(int(s.get("n_clips", 0)) for s in sections), sum(int(s.get("n_anomalies", 0)) for s in sections)


def _count(n: object, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def what_was_run(mode: str, summary: Mapping, cfg: RunConfig | None) -> str:
    """One plain sentence about how the scores were made."""
    factories = factory_names(summary, cfg)
    epochs = cfg.train.epochs if cfg else "?"
    if mode == "federated":
        fed = cfg.federation if cfg else None
        detail = ""
        if fed:
            detail = f" for {_count(fed.rounds, 'round')} x {_count(fed.local_epochs, 'local epoch')} ({fed.strategy})"
            if fed.personalize_epochs:
                detail += f", then {_count(fed.personalize_epochs, 'personalization epoch')} at each factory"
        text = (
            f"Federated learning with Flower: {_count(len(factories), 'factory', 'factories')} "
            f"trained one shared encoder{detail}; their recordings never left them"
        )
    elif mode == "centralized":
        text = (
            f"Centralized training: one encoder trained on all {len(factories)} factories' recordings "
            f"pooled in one place ({_count(epochs, 'epoch')})"
        )
    elif mode == "local":
        text = (
            f"Local-only training: each of the {len(factories)} factories trained its own encoder on its own "
            f"recordings ({_count(epochs, 'epoch')}), no cooperation"
        )
    elif mode == "baseline":
        return (
            "The non-learned floor: log-mel statistics of each clip, compared with the factory's normal training clips "
            "by nearest-neighbour distance; no training."
        )
    else:
        return "Scores read from this directory's submission files, evaluated against the data tree's labels."
    if cfg:
        names = {"learned": "the learned embedding", "logmel": "log-mel statistics", "aisfx": "the frozen aiSFX CNN"}
        detector = " averaged with ".join(names[m] for m in detector_members(cfg.detect.features))
        text += f"; each factory then scores clips by nearest-neighbour distance to its own normal clips on {detector}"
        if cfg.detect.member_weights == "validated":
            text += " (weighted per section by how well each separates held-back normal clips from pseudo-anomalies)"
        seconds = cfg.data.seconds
        text += f" (clips cropped or tiled to {seconds:g} s)" if seconds else " (whole clips, no crop)"
    return text + "."


def data_sentence(summary: Mapping) -> str:
    machines = list(summary["machines"])
    clips, anomalies = clip_counts(summary["machines"])
    source = summary.get("data_source", "a DCASE 2023 Task 2 data tree")
    where = f" at {summary['data']}" if summary.get("data") else ""
    counts = f": {clips} test clips, {anomalies} of them anomalous" if clips else ""
    return f"Data: {_count(len(machines), 'machine type')} ({', '.join(machines)}) from {source}{where}{counts}."


def run_verdict(summary: Mapping) -> str:
    machines = summary["machines"]
    text = f"Official score {100 * summary['official_score']:.2f}% (50% is guessing, 100% perfect)."
    if len(machines) > 1:
        ranked = sorted(machines, key=lambda m: machines[m]["official_score"])
        best, worst = ranked[-1], ranked[0]
        text += (
            f" Best detected: {best} ({100 * machines[best]['official_score']:.2f}%); "
            f"hardest: {worst} ({100 * machines[worst]['official_score']:.2f}%)."
        )
    return text


def _gap(a: float, b: float) -> str:
    d = 100 * (a - b)
    if abs(d) < 0.005:
        return "equal to"
    return f"{abs(d):.2f} points {'above' if d > 0 else 'below'}"


def comparison_verdict(summary: Mapping) -> str:
    modes = summary["modes"]
    fed, cen, loc = (modes[m]["official_score"] for m in ("federated", "centralized", "local"))
    text = (
        f"Federated training scored {100 * fed:.2f}%: {_gap(fed, cen)} centralized training on pooled data "
        f"({100 * cen:.2f}%, {summary['federated_vs_centralized_percent']:+.2f}% relative) and {_gap(fed, loc)} "
        f"factories training alone ({100 * loc:.2f}%)."
    )
    if summary.get("floor"):
        text += f" The non-learned floor (no training at all) scores {100 * summary['floor']['official_score']:.2f}%."
    return text


def shared_section(summary: Mapping, cfg: RunConfig | None) -> str:
    """What crossed the network in a federated run and what stayed in each factory."""
    share = str(summary.get("shared") or (cfg.federation.share if cfg else "encoder"))
    crossed = [
        f"{SHARED.get(share, share)}: from the server to each factory and back, once per round",
        "per round, each factory's training loss, accuracy, example count and training time",
        "at evaluation, metric values per machine type and section (AUC, pAUC, clip counts)",
    ]
    stayed = list(STAYED)
    if share == "no_norm":
        stayed.append("the encoder's LayerNorm parameters")
    return (
        '<h2>What was shared, what stayed in each factory</h2><div class="cols">'
        f"<div><b>Crossed the network</b>{_list(crossed)}</div>"
        f"<div><b>Never left a factory</b>{_list(stayed)}</div></div>"
    )


def privacy_note(privacy: Mapping) -> str:
    """The report line of a run's ``privacy`` record (secure aggregation, DP and its epsilon)."""
    parts = ["SecAgg+ (the server saw only the sum of the updates)"] if privacy.get("secure_aggregation") else []
    if privacy.get("dp"):
        parts.append(
            f"{privacy['dp']} DP: epsilon {privacy['epsilon']:.2f} at delta {privacy['delta']:g} per factory "
            f"after {privacy['rounds']} rounds (noise multiplier {privacy['noise_multiplier']:g}, "
            f"clip {privacy['clip']:g})"
        )
    elif privacy.get("clip"):
        parts.append(f"updates clipped to L2 norm {privacy['clip']:g}, no noise (no DP guarantee)")
    return "privacy: " + ("; ".join(parts) if parts else "none")


def provenance(summary: Mapping, config_text: str | None) -> str:
    """Versions, data source, privacy, skipped clips and the run's config (collapsed)."""
    items = [privacy_note(summary["privacy"])] if summary.get("privacy") else []
    if summary.get("data"):
        items.append(f"data: {summary['data']} ({summary.get('data_source', 'DCASE layout')})")
    if summary.get("encoder_start"):
        items.append(f"encoder start: {summary['encoder_start']}")
    versions = summary.get("versions") or {}
    if versions:
        items.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    skipped = summary.get("skipped_clips") or []
    items.append(f"{len(skipped)} unreadable clip(s) skipped" + (f": {', '.join(skipped)}" if skipped else ""))
    config = (
        f"<details><summary>Run configuration (config.toml)</summary><pre>{esc(config_text)}</pre></details>"
        if config_text
        else ""
    )
    return f"<h2>How this run was made</h2>{_list(items)}{config}"


def page(title: str, lede: Sequence[str], body: Sequence[str]) -> str:
    """The whole document: title, the plain-language header (its last line is the verdict), the body."""
    lines = [f"<p>{esc(line)}</p>" for line in lede[:-1]] + [f'<p class="verdict">{esc(lede[-1])}</p>']
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
        f'<div class="lede">{"".join(lines)}</div><p class="muted">{esc(HOW_TO_READ)}</p>'
        + "".join(body)
        + "</body></html>\n"
    )


def run_page(
    summary: Mapping, cfg: RunConfig | None, config_text: str | None, figures: Sequence[Figure], note: str = ""
) -> str:
    """The report of one run directory."""
    mode = str(summary.get("mode", "evaluation"))
    title = (
        f"coopasd report: {MODE_NAMES.get(mode, mode)} run"
        if mode != "baseline"
        else "coopasd report: the non-learned floor"
    )
    lede = [f"What was run: {what_was_run(mode, summary, cfg)}", data_sentence(summary), run_verdict(summary)]
    body = ["<h2>Detection quality per machine type</h2>", metrics_table(summary)]
    decisions = decisions_table(summary["machines"])
    if decisions:
        body += ["<h2>Alarms at the decision threshold</h2>", decisions]
    if note:
        body.append(f'<p class="muted">{esc(note)}</p>')
    body += [figure_html(f) for f in figures]
    if mode == "federated":
        body.append(shared_section(summary, cfg))
    body.append(provenance(summary, config_text))
    return page(title, lede, body)


def comparison_page(
    summary: Mapping,
    modes: Mapping[str, Mapping],
    cfg: RunConfig | None,
    config_text: str | None,
    figures: Sequence[Figure],
    note: str = "",
) -> str:
    """The report of a comparison directory: ``summary`` is comparison.json, ``modes`` the modes' metrics.json."""
    fed = modes["federated"]
    what = (
        "What was run: the same detector trained three ways on the same data and seeds. "
        + what_was_run("federated", fed, cfg)
        + " Centralized: all recordings pooled in one place (the upper reference, which needs the data to leave "
        "the plants). Local-only: each factory trains alone (what a factory gets without cooperation)."
    )
    body = ["<h2>Federated vs centralized vs local-only</h2>", comparison_table(summary)]
    gains = factory_gain_table(summary)
    if gains:
        body += ["<h2>What joining gave each factory</h2>", gains]
    decisions = decisions_table(summary["modes"]["federated"]["machines"], prefix="modes/federated/")
    if decisions:
        body += ["<h2>Alarms of the federated model at its decision thresholds</h2>", decisions]
    if note:
        body.append(f'<p class="muted">{esc(note)}</p>')
    body += [figure_html(f) for f in figures]
    body.append(shared_section(fed, cfg))
    body.append(provenance(fed, config_text))
    links = "".join(f'<li><a href="{esc(m)}/report.html">{esc(MODE_NAMES[m])}</a></li>' for m in modes)
    body.append(f"<h2>Each mode's own report</h2><ul>{links}</ul>")
    return page(
        "coopasd report: federated vs centralized vs local-only",
        [what, data_sentence(fed), comparison_verdict(summary)],
        body,
    )
