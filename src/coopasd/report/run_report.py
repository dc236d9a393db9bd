"""A run's and a comparison's report: the result files through :mod:`coopasd.rundir.writer`, then the
HTML page and its figures. ``coopasd evaluate`` and ``coopasd report`` come back here.

Re-running ``coopasd evaluate`` or ``coopasd report`` is lossless and idempotent: evaluate recomputes
the metric keys of ``metrics.json`` (and ``comparison.json``) from the submission files and keeps
every other key; the report page is a function of those files, the config and the submission files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from coopasd.atomic import write_atomic
from coopasd.config.settings import RunConfig, from_toml_text, to_toml
from coopasd.data.layout import discover_clips
from coopasd.dcase.evaluation import SectionScores, evaluate_submission, read_submission
from coopasd.dcase.metrics import summarize
from coopasd.dcase.results import MODES, Comparison, ModeResult, compare_modes
from coopasd.errors import CoopasdError, SubmissionError
from coopasd.report import page
from coopasd.report.figures import comparison_figures, run_figures
from coopasd.rundir.provenance import data_keys
from coopasd.rundir.writer import (
    COMPARISON_FILE,
    clear_results,
    floor_entry,
    is_comparison,
    model_thresholds,
    read_config_text,
    read_json,
    read_metrics,
    run_summary,
    sibling_floor,
    write_json,
    write_metrics,
    write_run_files,
)


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
    """A whole run directory, the same for every mode: the result files
    (:func:`coopasd.rundir.writer.write_run_files`), then the figures and the HTML page. Returns the
    metrics summary, or None where every test label is hidden (then there is no page)."""
    summary = write_run_files(run_dir, result, cfg, data_dir)
    if summary is not None:
        write_run_report(run_dir, summary, to_toml(cfg), result.run.sections)
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
    write_run_report(run_dir, summary, read_config_text(run_dir), run.sections)
    return summary, run.sections


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
    config_text = config_text if config_text is not None else read_config_text(Path(out) / "federated")
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
        summary["floor"] = floor_entry(floor)
    write_json(Path(out) / COMPARISON_FILE, summary)
    modes = {m: run_summary(r, data_dir) or {} for m, r in comparison.modes.items()}
    sections = {m: r.run.sections for m, r in comparison.modes.items()}
    write_comparison_report(out, summary, modes, sections, to_toml(cfg))
    return summary


def evaluate_comparison(out: Path, data_dir: Path) -> tuple[dict, dict[str, dict]]:
    """:func:`evaluate_run` for each mode, then ``comparison.json`` (metric keys recomputed, every other
    key kept) and the combined report. Returns comparison.json's content and the modes' summaries."""
    out = Path(out)
    clips = discover_clips(data_dir, splits=("test",))
    for mode in MODES:  # every mode's submission checked before any file is rewritten
        evaluate_submission(out / mode / "submission", clips)
    modes, sections = {}, {}
    for mode in MODES:
        modes[mode], sections[mode] = evaluate_run(out / mode, data_dir, mode)
    path = out / COMPARISON_FILE
    summary = (read_json(path) if path.is_file() else {}) | compare_modes(modes)
    summary.setdefault("rounds", modes["federated"].get("rounds", []))
    floor = sibling_floor(out, data_keys(data_dir)["data"], list(modes["federated"]["machines"]))
    if "floor" not in summary and floor:
        summary["floor"] = floor_entry(floor)
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
        summary = read_metrics(run_dir)
        summary.setdefault("thresholds", model_thresholds(run_dir))
        sections, note = _sections_on_disk(run_dir, summary)
        return summary, write_run_report(run_dir, summary, read_config_text(run_dir), sections, note)
    path = run_dir / COMPARISON_FILE
    if not path.is_file():
        raise SubmissionError(f"{path}: not found; run 'coopasd evaluate {run_dir} --data DATA_DIR' first")
    modes = {m: read_metrics(run_dir / m) for m in MODES}
    for mode, summary in modes.items():
        summary.setdefault("thresholds", model_thresholds(run_dir / mode))
    fed = modes["federated"]
    summary = compare_modes(modes) | read_json(path)
    if "floor" not in summary and (floor := sibling_floor(run_dir, fed.get("data"), list(fed["machines"]))):
        summary["floor"] = floor_entry(floor)
    found = {m: _sections_on_disk(run_dir / m, modes[m]) for m in MODES}
    note = next((f"{m}: {why}" for m, (_, why) in found.items() if why), "")
    sections = {m: secs for m, (secs, _) in found.items()}
    return summary, write_comparison_report(run_dir, summary, modes, sections, None, note)
