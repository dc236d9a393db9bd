"""The only writer of result files: run directories (every mode the same way), factory models, a
factory's own folder in a federated run, federation.json, comparison, figures, the HTML report, the
pre-trained backbone and its record. It also reads back what it wrote where a run needs it.

Re-running ``coopasd evaluate`` or ``coopasd report`` is lossless and idempotent: evaluate recomputes
the metric keys of ``metrics.json`` (and ``comparison.json``) from the submission files and keeps
every other key; the report page is a function of those files, the config and the submission files.

Every file is written atomically (temporary file + rename), so an interrupted run never
leaves a half-written result behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shlex
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from coopasd import page
from coopasd.atomic import write_atomic
from coopasd.config import RunConfig, from_toml_text, to_toml
from coopasd.data.layout import Clip, discover_clips
from coopasd.detect import FactoryModel, section_key
from coopasd.environment import host, versions
from coopasd.errors import CoopasdError, OutputError, RunDirError, SubmissionError
from coopasd.evaluation import (
    ScoredRun,
    SectionScores,
    decision_file_name,
    evaluate_submission,
    read_submission,
    score_file_name,
)
from coopasd.figures import comparison_figures, run_figures
from coopasd.metrics import summarize
from coopasd.provenance import data_keys
from coopasd.results import MODES, Comparison, FactoryResult, ModeResult, compare_modes

FEDERATION_FILE = "federation.json"  # the server's result in its run directory
FACTORY_MODEL_FILE = "model.pt"  # a federated factory's detector, in its own folder
FACTORY_RECORD_FILE = "factory.json"  # a federated factory's skipped clips, in its own folder
COMPARISON_FILE = "comparison.json"  # a comparison directory's summary
RUN_RECORD = "run.json"  # a run directory's kind, command line, start/end (UTC), versions and host

_RUN_FILES = ("config.toml", RUN_RECORD, "submission", "models", "metrics.json", "metrics.csv", "report.html")
RUN_OUTPUTS: dict[str, tuple[str, ...]] = {  # what a run of each command writes in its --out (and --force deletes)
    "baseline": (*_RUN_FILES, "scores.png"),
    "train": (*_RUN_FILES, "scores.png"),
    "federate": (*_RUN_FILES, "scores.png", "rounds.png", "checkpoints", "factories", FEDERATION_FILE),
    "compare": (*_RUN_FILES, "rounds.png", "comparison.json", "federated", "centralized", "local"),
    "demo": (RUN_RECORD, "data", "baseline", "compare"),
}

# result files this module writes at the top of a run directory (an earlier run's are removed first)
RUN_RESULT_FILES = ("metrics.json", "metrics.csv", "report.html", "scores.png", "rounds.png", "comparison.json")
_SUBMISSION_PATTERNS = ("anomaly_score_*_section_*_test.csv", "decision_result_*_section_*_test.csv")


def clear_results(run_dir: Path, keep: Sequence[str] = ()) -> list[Path]:
    """Remove the result files an earlier run left in ``run_dir`` (only names this module writes:
    ``RUN_RESULT_FILES``, submission csvs, ``models/*.pt``, ``federation.json``), except ``keep``.

    So a reused run directory never shows an earlier run's metrics beside new scores. Working state
    (``checkpoints/``, ``factories/``) is left alone. Returns what was removed.
    """
    run_dir = Path(run_dir)
    stale = [run_dir / name for name in (*RUN_RESULT_FILES, FEDERATION_FILE) if name not in keep]
    stale += [p for pattern in _SUBMISSION_PATTERNS for p in sorted((run_dir / "submission").glob(pattern))]
    stale += sorted((run_dir / "models").glob("*.pt"))
    removed = []
    for path in stale:
        if path.is_file():
            try:
                path.unlink()
            except OSError as err:
                raise OutputError(f"{path}: cannot remove this earlier result ({err.strerror or err})") from err
            removed.append(path)
    return removed


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
    """DCASE submission files of one section: anomaly scores and 0/1 decisions, no header.

    A score that is not a finite number is refused (:class:`SubmissionError` naming the clips), so a
    submission never holds NaN or inf.
    """
    sub = Path(run_dir) / "submission"
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    bad = [f"{n} ({v})" for n, v in zip(names, values.tolist(), strict=True) if not np.isfinite(v)]
    if bad:
        raise SubmissionError(
            f"{sub / score_file_name(machine_type, section)}: refusing to write {len(bad)} score(s) that are not "
            f"finite numbers, e.g. {', '.join(bad[:3])}"
        )
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


def _earlier_run(out: Path) -> dict:
    try:
        record = json.loads((out / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def claim_run_dir(out: Path, kind: str, force: bool = False, resume: bool = False) -> None:
    """Check that ``out`` may take a run of command ``kind``, and clear an earlier one of the same kind.

    ``out`` must be absent, empty, or an earlier ``kind`` run (its ``run.json`` says so). An earlier
    finished run is replaced only with ``force``; an unfinished one (failed, interrupted) is replaced.
    Replacing deletes what that run wrote (:data:`RUN_OUTPUTS`) and nothing else. ``resume`` (federate)
    needs ``out/checkpoints/latest.pt`` and keeps everything. Raises :class:`RunDirError` otherwise.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder; give a folder for the results")
    if resume:
        if not (out / "checkpoints" / "latest.pt").is_file():
            raise RunDirError(f"{out}: nothing to resume (no checkpoints/latest.pt)")
        return
    if not out.exists() or not any(out.iterdir()):
        return
    earlier = _earlier_run(out)
    if earlier.get("kind") != kind:
        found = f"holds a '{earlier['kind']}' run" if earlier.get("kind") else f"is not empty and has no {RUN_RECORD}"
        raise RunDirError(f"{out}: {found}; choose an empty or new --out for '{kind}'")
    if earlier.get("status") == "finished" and not force:
        raise RunDirError(
            f"{out}: holds a finished '{kind}' run (ended {earlier.get('ended_utc')}); "
            "pass --force to replace it, or choose a new --out"
        )
    for name in RUN_OUTPUTS[kind]:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def recorded_run(
    out: Path, kind: str, command: Sequence[str], force: bool = False, resume: bool = False
) -> Iterator[dict]:
    """Claim ``out`` (:func:`claim_run_dir`) and keep ``out/run.json``: written when the run starts
    (status "running") and again when it ends ("finished" or "failed", with the error)."""
    claim_run_dir(out, kind, force, resume)
    record: dict = {"kind": kind, "status": "running", "command": shlex.join(command), "resumed": resume}
    record |= {"started_utc": _utc_now(), "ended_utc": None, "seconds": None, "versions": versions(), "host": host()}
    started = time.monotonic()
    write_json(Path(out) / RUN_RECORD, record)
    try:
        yield record
        record["status"] = "finished"
    except BaseException as err:
        record |= {"status": "failed", "error": str(err) or type(err).__name__}
        raise
    finally:
        record |= {"ended_utc": _utc_now(), "seconds": round(time.monotonic() - started, 3)}
        write_json(Path(out) / RUN_RECORD, record)


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
    table = Table(title=Text(title))  # Text: a path in the title is not read as markup
    rows = metrics_rows(summary)
    for i, name in enumerate(rows[0]):
        table.add_column(str(name).replace("_", " "), justify="left" if i == 0 else "right", overflow="fold")
    for row in rows[1:]:
        style = "bold" if row[0] == "harmonic mean" else None
        table.add_row(escape(str(row[0])), *(f"{100 * float(v):.2f}" for v in row[1:]), style=style)
    table.caption = "values in %; official score = harmonic mean of all AUC(source), AUC(target), pAUC"
    return table


def write_pretrained(out: Path, checkpoint: bytes, meta: dict) -> dict:
    """The pre-trained backbone and its record ``<out>.json`` (meta plus the file's sha256); returns the record."""
    record = meta | {"sha256": hashlib.sha256(checkpoint).hexdigest()}
    write_atomic(Path(out), checkpoint)
    write_json(Path(out).with_suffix(".json"), record)
    return record


def run_summary(result: ModeResult, data_dir: Path) -> dict | None:
    """``metrics.json`` of a run: the result's summary, the data tree and the versions it ran with."""
    summary = result.summary()
    return None if summary is None else summary | data_keys(data_dir) | {"versions": versions()}


# ---- a run directory --------------------------------------------------------------------------------------


def _config_text(run_dir: Path) -> str | None:
    path = Path(run_dir) / "config.toml"
    return path.read_text() if path.is_file() else None


def _parse_config(text: str | None) -> RunConfig | None:
    """The run's config, or None where it has none or one this version cannot read (the page says less)."""
    try:
        return from_toml_text(text) if text else None
    except CoopasdError:
        return None


def _save_figures(run_dir: Path, figures: Sequence[page.Figure]) -> None:
    for fig in figures:
        write_atomic(Path(run_dir) / f"{fig.name}.png", fig.png)


def write_run_report(
    run_dir: Path, summary: Mapping, config_text: str | None, sections: Sequence[SectionScores] | None, note: str = ""
) -> Path:
    """``report.html`` of a run directory (figures inlined; each also saved as ``<name>.png``)."""
    cfg = _parse_config(config_text)
    figures = run_figures(summary, sections, cfg)
    _save_figures(run_dir, figures)
    return write_atomic(Path(run_dir) / "report.html", page.run_page(summary, cfg, config_text, figures, note))


def write_run(run_dir: Path, result: ModeResult, cfg: RunConfig, data_dir: Path) -> dict | None:
    """A whole run directory, the same for every mode: config, submission, models, metrics, figures,
    HTML. Returns the metrics summary, or None where every test label is hidden.

    Result files of an earlier run in ``run_dir`` are removed first (see :func:`clear_results`), so
    nothing stale survives beside the new scores; a federated run keeps its own ``federation.json``."""
    run_dir = Path(run_dir)
    clear_results(run_dir, keep=(FEDERATION_FILE,) if result.mode == "federated" else ())
    write_atomic(run_dir / "config.toml", to_toml(cfg))
    _write_sections(run_dir, result.run)
    for model in result.models:
        save_model(run_dir / "models" / f"{model.name}.pt", model)
    summary = run_summary(result, data_dir)
    if summary is None:
        return None
    write_metrics(run_dir, summary)
    write_run_report(run_dir, summary, to_toml(cfg), result.run.sections)
    return summary


def _read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise SubmissionError(f"{path}: not found; run 'coopasd evaluate {run_dir} --data DATA_DIR' first")
    summary = read_json(path)
    if "machines" not in summary or "official_score" not in summary:
        raise SubmissionError(f"{path}: not a coopasd metrics file (no 'machines' or 'official_score')")
    return summary


def _sections_on_disk(run_dir: Path, summary: Mapping) -> tuple[list[SectionScores] | None, str]:
    """The run's scored test clips with labels from the data tree named in ``summary``, or why not."""
    data = summary.get("data")
    if not data:
        hint = f"run 'coopasd evaluate {run_dir} --data DATA_DIR' once to record it"
        return None, f"Score plots left out: metrics.json does not name the data tree with the labels ({hint})."
    if not Path(data).is_dir():
        return None, f"Score plots left out: the data tree with the labels, {data}, is gone."
    try:
        clips = discover_clips(Path(data), splits=("test",))
        return read_submission(Path(run_dir) / "submission", clips, require_all=False).sections, ""
    except CoopasdError as err:
        return None, f"Score plots left out: {err}"


def model_thresholds(run_dir: Path) -> dict[str, float]:
    """Decision thresholds per ``machine/section`` from the run's saved factory models (older runs did
    not record them in metrics.json); unreadable model files are left out."""
    found: dict[str, float] = {}
    for path in sorted((Path(run_dir) / "models").glob("*.pt")):
        try:
            found |= {key: float(d.threshold) for key, d in FactoryModel.load(path).detectors.items()}
        except CoopasdError:
            continue
    return found


def evaluate_run(run_dir: Path, data_dir: Path, mode: str | None = None) -> tuple[dict, list[SectionScores]]:
    """Recompute a run directory's metrics from its submission files and the data tree's labels:
    the metric keys are replaced, every other key of an existing ``metrics.json`` is kept (``mode``
    and the thresholds are filled in where missing; the versions a run ran with are never guessed);
    then ``metrics.csv`` and the report are rewritten. Returns the summary and the scored sections."""
    run_dir = Path(run_dir)
    run, sections = evaluate_submission(run_dir / "submission", discover_clips(data_dir, splits=("test",)))
    existing = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    summary = existing | summarize(sections) | data_keys(data_dir)
    if mode:
        summary.setdefault("mode", mode)
    if "thresholds" not in summary and (thresholds := model_thresholds(run_dir)):
        summary["thresholds"] = thresholds
    write_metrics(run_dir, summary)
    write_run_report(run_dir, summary, _config_text(run_dir), run.sections)
    return summary, run.sections


# ---- a comparison directory --------------------------------------------------------------------------------


def is_comparison(run_dir: Path) -> bool:
    """A directory written by ``coopasd compare``: a comparison.json, or one run directory per mode."""
    run_dir = Path(run_dir)
    return (run_dir / COMPARISON_FILE).is_file() or all((run_dir / m / "submission").is_dir() for m in MODES)


def sibling_floor(out: Path, data: str | None, machines: Sequence[str]) -> dict | None:
    """The non-learned floor's metrics from ``out/../baseline/metrics.json`` (as ``coopasd demo`` lays it
    out), where that run scored the same data tree (``data``, resolved) and the same machine types."""
    path = Path(out).resolve().parent / "baseline" / "metrics.json"
    if not path.is_file():
        return None
    try:
        floor = read_json(path)
    except SubmissionError:
        return None
    same_data = not data or not floor.get("data") or floor["data"] == data
    return floor if same_data and sorted(floor.get("machines", {})) == sorted(machines) else None


def _floor_entry(floor: Mapping) -> dict:
    return {"official_score": floor["official_score"], "machines": floor["machines"]}


def write_comparison_report(
    out: Path,
    summary: Mapping,
    modes: Mapping[str, Mapping],
    sections: Mapping[str, Sequence[SectionScores] | None],
    config_text: str | None = None,
    note: str = "",
) -> Path:
    """The comparison's ``report.html`` from comparison.json (``summary``), the modes' metrics.json and
    their scored sections (figures inlined; each also saved as ``<name>.png``). ``config_text``: the
    run's config.toml; None reads ``out/federated/config.toml``. ``note``: why score plots are missing."""
    config_text = config_text if config_text is not None else _config_text(Path(out) / "federated")
    cfg = _parse_config(config_text)
    figures = comparison_figures(summary, modes, sections, cfg)
    _save_figures(out, figures)
    html_text = page.comparison_page(summary, modes, cfg, config_text, figures, note)
    return write_atomic(Path(out) / "report.html", html_text)


def write_comparison(
    out: Path, comparison: Comparison, cfg: RunConfig, data_dir: Path, floor: dict | None = None
) -> dict:
    """``comparison.json`` and the combined report. ``floor``: the non-learned baseline's metrics.json
    summary (drawn and tabled beside the modes); None looks for ``out/../baseline/metrics.json``.
    An earlier single run's results at the top of ``out`` are removed first (see :func:`clear_results`)."""
    clear_results(out)
    summary = comparison.summary()
    machines = list(summary["modes"]["federated"]["machines"])
    floor = floor or sibling_floor(out, data_keys(data_dir)["data"], machines)
    if floor:
        summary["floor"] = _floor_entry(floor)
    write_json(Path(out) / COMPARISON_FILE, summary)
    modes = {m: run_summary(r, data_dir) or {} for m, r in comparison.modes.items()}
    sections = {m: r.run.sections for m, r in comparison.modes.items()}
    write_comparison_report(out, summary, modes, sections, to_toml(cfg))
    return summary


def evaluate_comparison(out: Path, data_dir: Path) -> tuple[dict, dict[str, dict]]:
    """:func:`evaluate_run` for each mode, then ``comparison.json`` (metric keys recomputed, every other
    key kept) and the combined report. Returns comparison.json's content and the modes' summaries."""
    out = Path(out)
    modes, sections = {}, {}
    for mode in MODES:
        modes[mode], sections[mode] = evaluate_run(out / mode, data_dir, mode)
    path = out / COMPARISON_FILE
    summary = (read_json(path) if path.is_file() else {}) | compare_modes(modes)
    summary.setdefault("rounds", modes["federated"].get("rounds", []))
    floor = sibling_floor(out, data_keys(data_dir)["data"], list(modes["federated"]["machines"]))
    if "floor" not in summary and floor:
        summary["floor"] = _floor_entry(floor)
    write_json(path, summary)
    write_comparison_report(out, summary, modes, sections)
    return summary, modes


def rebuild_report(run_dir: Path) -> tuple[dict, Path]:
    """Rewrite ``report.html`` of a run or comparison directory from its files; nothing else changes.
    Keys older runs lack are derived for the page only (thresholds from the saved models, the
    per-machine differences from the modes' metrics.json). Returns the summary the page shows
    (metrics.json or comparison.json) and the page's path."""
    run_dir = Path(run_dir)
    if not is_comparison(run_dir):
        summary = _read_metrics(run_dir)
        summary.setdefault("thresholds", model_thresholds(run_dir))
        sections, note = _sections_on_disk(run_dir, summary)
        return summary, write_run_report(run_dir, summary, _config_text(run_dir), sections, note)
    path = run_dir / COMPARISON_FILE
    if not path.is_file():
        raise SubmissionError(f"{path}: not found; run 'coopasd evaluate {run_dir} --data DATA_DIR' first")
    modes = {m: _read_metrics(run_dir / m) for m in MODES}
    for mode, summary in modes.items():
        summary.setdefault("thresholds", model_thresholds(run_dir / mode))
    fed = modes["federated"]
    summary = compare_modes(modes) | read_json(path)
    if "floor" not in summary and (floor := sibling_floor(run_dir, fed.get("data"), list(fed["machines"]))):
        summary["floor"] = _floor_entry(floor)
    found = {m: _sections_on_disk(run_dir / m, modes[m]) for m in MODES}
    note = next((f"{m}: {why}" for m, (_, why) in found.items() if why), "")
    sections = {m: secs for m, (secs, _) in found.items()}
    return summary, write_comparison_report(run_dir, summary, modes, sections, None, note)


# ---- printed tables and captions ---------------------------------------------------------------------------


METRIC_LABELS = {"auc_source": "AUC source", "auc_target": "AUC target", "pauc": "pAUC", "official_score": "hmean"}
VS_CENTRAL = "fed vs central (%)"  # relative difference, in % of the centralized value
VS_LOCAL = "fed vs local (pt)"  # absolute difference, in percentage points


def comparison_rows(modes: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Per machine AUC(source), AUC(target), pAUC, hmean for each mode (in %), plus federated vs centralized
    (relative, in % of centralized) and federated vs local-only (absolute, in percentage points), as
    :func:`coopasd.results.compare_modes` computes them; then each factory's official score over its own
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
