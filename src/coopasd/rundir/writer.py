"""The on-disk writer of every result file: run directories (every mode the same way), factory models,
a factory's own folder in a federated run, federation.json, comparison.json, run records, the
pre-trained backbone and its record. It also reads back what it wrote where a run needs it.

Flower's apps import this module, so it stays free of rich and matplotlib: the page, figures and
console tables live in :mod:`coopasd.report`.

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

from coopasd.atomic import write_atomic
from coopasd.config.settings import RunConfig, to_toml
from coopasd.data.layout import Clip
from coopasd.dcase.evaluation import (
    ScoredRun,
    decision_file_name,
    read_submission,
    score_file_name,
)
from coopasd.dcase.results import MODES, FactoryResult, ModeResult
from coopasd.detect.detectors import FactoryModel, section_key
from coopasd.errors import CoopasdError, Interrupted, OutputError, RunDirError, SubmissionError
from coopasd.rundir.environment import host, versions
from coopasd.rundir.provenance import data_keys

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


def interrupted_line(out: Path, kind: str, command: Sequence[str], what: str) -> str:
    """What an interrupted ``command`` left and how to go on: ``--resume`` where a checkpoint was saved."""
    line = what or "interrupted"
    if kind != "federate" or not (Path(out) / "checkpoints" / "latest.pt").is_file():
        return f"{line}; nothing to resume: run the command again"
    again = [t for t in command if t != "--force"]
    return f"{line}; resume with: {shlex.join([*again, *([] if '--resume' in again else ['--resume'])])}"


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
    except (Interrupted, KeyboardInterrupt) as err:  # Ctrl-C: one line that says how to go on
        record |= {"status": "interrupted", "error": str(err) or "interrupted"}
        raise Interrupted(interrupted_line(out, kind, command, str(err))) from None
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


def read_config_text(run_dir: Path) -> str | None:
    path = Path(run_dir) / "config.toml"
    return path.read_text() if path.is_file() else None


def write_run_files(run_dir: Path, result: ModeResult, cfg: RunConfig, data_dir: Path) -> dict | None:
    """A run directory's result files, the same for every mode: config, submission, models, metrics.
    Returns the metrics summary, or None where every test label is hidden.

    Result files of an earlier run in ``run_dir`` are removed first (see :func:`clear_results`), so
    nothing stale survives beside the new scores; a federated run keeps its own ``federation.json``."""
    run_dir = Path(run_dir)
    clear_results(run_dir, keep=(FEDERATION_FILE,) if result.mode == "federated" else ())
    write_atomic(run_dir / "config.toml", to_toml(cfg))
    _write_sections(run_dir, result.run)
    for model in result.models:
        save_model(run_dir / "models" / f"{model.name}.pt", model)
    summary = run_summary(result, data_dir)
    if summary is not None:
        write_metrics(run_dir, summary)
    return summary


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise SubmissionError(f"{path}: not found; run 'coopasd evaluate {run_dir} --data DATA_DIR' first")
    summary = read_json(path)
    if "machines" not in summary or "official_score" not in summary:
        raise SubmissionError(f"{path}: not a coopasd metrics file (no 'machines' or 'official_score')")
    return summary


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


def floor_entry(floor: Mapping) -> dict:
    return {"official_score": floor["official_score"], "machines": floor["machines"]}
