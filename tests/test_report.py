"""The report a plant engineer reads: one self-contained page per run and per comparison whose numbers
equal the JSON files (checked in headless Chromium), and evaluate/report re-runs that lose nothing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from coopasd.config.settings import load_config
from coopasd.dcase.results import Comparison, ModeResult
from coopasd.experiment.pipeline import run_baseline_mode, run_learned_mode
from coopasd.report.plots import score_limits
from coopasd.report.run_report import write_comparison, write_run
from coopasd.rundir.writer import write_json
from tests.test_cli import run_cli

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NUMBER = re.compile(r"^[+-]?\d+\.\d{2}( %| pt)?$")
FED_KEYS = (
    "rounds",
    "factories",
    "strategy",
    "shared",
    "encoder_start",
    "final_hash",
    "thresholds",
    "versions",
    "data",
)


def _epochs(loss0: float) -> list[dict]:
    return [{"epoch": e, "loss": loss0 - e, "accuracy": 0.5, "lr": 1e-4, "seconds": 1.0} for e in (1, 2, 3)]


def _rounds() -> list[dict]:
    return [
        {
            "round": r,
            "asked": 2,
            "answered": 2,
            "bytes_down_per_factory": 7_668_288,
            "bytes_up": {"north": 7_668_288, "south": 7_668_288},
            "aggregated": True,
            "train_loss": 9.0 - r,
            "seconds": 3.0,
            "official_score": 0.55 + 0.02 * r,
        }
        for r in (1, 2, 3)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tree) -> Path:
    """``root/baseline`` and ``root/compare/{federated,centralized,local}`` made by the pipeline (log-mel
    detector: no training, so fast); the federated mode is a real run given a fabricated rounds history,
    and the modes use different detector settings so that their columns differ."""
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        None, detect={"features": "logmel"}, partition={"factories": "north=fan;south=valve"}, federation={"rounds": 3}
    )
    floor = write_run(root / "baseline", run_baseline_mode(tiny_tree, cfg), cfg, tiny_tree)

    def variant(**detect):
        return dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, **detect))

    cen = run_learned_mode("centralized", tiny_tree, cfg)
    cen.extra["training"] = {"all": _epochs(10.0)}
    loc = run_learned_mode("local", tiny_tree, variant(k=2))
    loc.extra["training"] = {"north": _epochs(11.0), "south": _epochs(10.5)}
    own = run_learned_mode("local", tiny_tree, variant(normalize="none"))
    extra = {"encoder_start": "shipped pre-trained tiny", "rounds": _rounds(), "strategy": "fedavgm"}
    extra |= {"shared": "encoder", "final_hash": "ab" * 8, "factories": ["north", "south"]}
    fed = ModeResult("federated", own.run, own.models, extra)
    comparison = Comparison(
        {"federated": fed, "centralized": cen, "local": loc}, {"encoder": 7_668_288, "lora": 200_000}
    )
    for mode, result in comparison.modes.items():
        write_run(root / "compare" / mode, result, cfg, tiny_tree)
    write_comparison(root / "compare", comparison, cfg, tiny_tree, floor=floor)
    return root


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed and could not be (.ci/run installs it: apt-get install chromium)")
    return exe


def _browser(page: Path, tmp_path: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` with ``args``; returns its stdout (the DOM for --dump-dom)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Dom(HTMLParser):
    """Tables (header texts, rows of (attributes, text) cells), image sources, links and headings of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[list[str], list[list[tuple[dict, str]]]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self._open: tuple[str, dict] | None = None
        self._text: list[str] = []

    @property
    def cells(self) -> list[tuple[dict, str]]:
        return [cell for _, rows in self.tables for row in rows for cell in row]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th", "h1", "h2"):
            self._open, self._text = (tag, attrs), []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in ("link", "script", "a") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))

    def handle_endtag(self, tag):
        if self._open is None or self._open[0] != tag:
            return
        text, attrs = "".join(self._text).strip(), self._open[1]
        if tag == "td":
            self.tables[-1][1][-1].append((attrs, text))
        elif tag == "th":
            self.tables[-1][0].append(text)
        else:
            self.headings.append(text)
        self._open = None

    def handle_data(self, data):
        self._text.append(data)


def _lookup(payload: dict, path: str) -> float:
    for part in path.split("/"):
        payload = payload[part]
    return float(payload)


def _expected(path: str, value: float) -> str:
    if path.endswith("_percent"):
        return f"{value:+.2f} %"
    if path.endswith("_points"):
        return f"{value:+.2f} pt"
    return f"{100 * value:.2f}"


def _check_page(dom_text: str, payload: dict) -> _Dom:
    """Every number in the page's tables comes from ``payload`` and equals it to 2 decimals in %."""
    dom = _Dom()
    dom.feed(dom_text)
    numeric = [(attrs, text) for attrs, text in dom.cells if NUMBER.match(text)]
    assert numeric, "no numbers in the page's tables"
    for attrs, text in numeric:
        assert "data-src" in attrs, f"table number {text!r} has no data-src"
        assert text == _expected(attrs["data-src"], _lookup(payload, attrs["data-src"])), attrs["data-src"]
    # self-contained: every image inlined as a PNG, no stylesheet/script/link outside the page but the modes' pages
    assert dom.images and all(src.startswith("data:image/png;base64,") for src in dom.images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG" for src in dom.images)
    assert all(re.fullmatch(r"(federated|centralized|local)/report\.html", link) for link in dom.links), dom.links
    return dom


COLUMN_SOURCES = {  # comparison table: a header and the start or end of every data-src below it
    "federated (%)": ("modes/federated/", ""),
    "centralized (%)": ("modes/centralized/", ""),
    "local-only (%)": ("modes/local/", ""),
    "floor, no training (%)": ("floor/", ""),
    "federated vs centralized (% change)": ("", "vs_centralized_percent"),
    "federated vs local-only (points)": ("", "_points"),
}
METRIC_KEYS = {"AUC, source domain": "auc_source", "AUC, target domain": "auc_target", "pAUC": "pauc"}


def _check_comparison_columns(dom: _Dom) -> None:
    """Each number sits under the header of the mode it comes from, in the row of its machine and metric."""
    header, rows = dom.tables[0]
    assert list(COLUMN_SOURCES) == header[2:]
    for row in filter(None, rows):  # the header row holds no td cells
        machine, metric = row[0][1], METRIC_KEYS.get(row[1][1], "official_score")
        for name, (attrs, _) in zip(header[2:], row[2:], strict=True):
            start, end = COLUMN_SOURCES[name]
            assert attrs["data-src"].startswith(start) and attrs["data-src"].endswith(end), (name, attrs)
            if machine != "all machine types":
                assert f"/{machine}/{metric}" in attrs["data-src"], (machine, metric, attrs)


def test_pages_show_the_json_numbers_in_a_browser(runs, tmp_path):
    compare = runs / "compare"
    comparison = json.loads((compare / "comparison.json").read_text())
    dom = _check_page(_browser(compare / "report.html", tmp_path, "--dump-dom"), comparison)
    _check_comparison_columns(dom)
    srcs = {attrs["data-src"] for attrs, _ in dom.cells if "data-src" in attrs}
    # 2 machines x 4 metrics x (3 modes + floor + 2 differences) + the totals row, + 4 domain rows x 4 alarm values,
    # + what joining gave each of the 2 factories (3 modes + gain + vs centralized)
    assert len(srcs) == 2 * 4 * 6 + 6 + 4 * 4 + 2 * 5
    assert {f"factories/{f}/gain_points" for f in comparison["factories"]} <= srcs
    assert len(comparison["factories"]) == 2
    assert {"floor/official_score", "differences/fan/pauc/vs_local_points", "federated_vs_centralized_percent"} <= srcs
    assert "modes/federated/machines/valve/sections/00/f1_target" in srcs
    for heading in ("Federated learning round by round", "ROC curves", "Score distributions", "Training loss"):
        assert any(h.startswith(heading) for h in dom.headings), heading
    assert (
        "Bytes on the wire per round" in dom.headings and "What was shared, what stayed in each factory" in dom.headings
    )
    assert len(dom.images) == 5
    # each mode's own page and the floor's page against their metrics.json
    for run, images in ((compare / "federated", 5), (compare / "local", 3), (runs / "baseline", 2)):
        metrics = json.loads((run / "metrics.json").read_text())
        dom = _check_page(_browser(run / "report.html", tmp_path, "--dump-dom"), metrics)
        assert len(dom.images) == images, run
        assert "section 00" in [text for _, text in dom.cells]
    # it renders: a full-page screenshot
    shot = tmp_path / "compare.png"
    _browser(compare / "report.html", tmp_path, "--hide-scrollbars", "--window-size=1200,4200", f"--screenshot={shot}")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 100_000


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _command(monkeypatch, capsys, *args: str) -> str:
    code, out = run_cli(monkeypatch, capsys, *args)
    assert code == 0, out
    return out


def test_evaluate_and_report_twice_change_nothing(runs, tiny_tree, tmp_path, monkeypatch, capsys):
    shutil.copytree(runs, tmp_path / "runs")
    compare, fed = tmp_path / "runs" / "compare", tmp_path / "runs" / "compare" / "federated"
    metrics = json.loads((fed / "metrics.json").read_text())
    write_json(fed / "metrics.json", metrics | {"operator_note": "a key evaluate does not compute"})
    original = _snapshot(compare)
    for _ in range(2):  # a federated run directory: evaluate, then report, twice each
        _command(monkeypatch, capsys, "evaluate", str(fed), "--data", str(tiny_tree))
        assert _snapshot(compare) == original
    for _ in range(2):
        assert "report.html" in _command(monkeypatch, capsys, "report", str(fed))
        assert _snapshot(compare) == original
    assert all(key in metrics for key in FED_KEYS) and len(metrics["rounds"]) == 3
    for _ in range(2):  # the comparison directory
        assert "federated vs centralized vs local-only" in _command(
            monkeypatch, capsys, "evaluate", str(compare), "--data", str(tiny_tree)
        )
        assert _snapshot(compare) == original
    for _ in range(2):
        _command(monkeypatch, capsys, "report", str(compare))
        assert _snapshot(compare) == original


def test_a_comparison_without_comparison_json_is_rebuilt_by_evaluate(runs, tiny_tree, tmp_path, monkeypatch, capsys):
    shutil.copytree(runs, tmp_path / "runs")
    compare = tmp_path / "runs" / "compare"
    before = json.loads((compare / "comparison.json").read_text())
    (compare / "comparison.json").unlink()
    local = json.loads((compare / "local" / "metrics.json").read_text())
    write_json(compare / "local" / "metrics.json", local | {"official_score": 0.0})  # evaluate recomputes it
    code, out = run_cli(monkeypatch, capsys, "report", str(compare))
    assert code == 2 and "comparison.json: not found; run 'coopasd evaluate" in out
    _command(monkeypatch, capsys, "evaluate", str(compare), "--data", str(tiny_tree))
    after = json.loads((compare / "comparison.json").read_text())
    # everything but the bytes per transfer (a property of the model, not of the result files) comes back
    assert after == {k: v for k, v in before.items() if k != "bytes_per_transfer"}
    assert json.loads((compare / "local" / "metrics.json").read_text()) == local
    assert "floor/official_score" in (compare / "report.html").read_text()


def test_score_axes_span_at_least_ten_points():
    assert score_limits([76.2, 76.95]) == pytest.approx((71.575, 81.575))
    low, high = score_limits([99.5, 98.0])
    assert high == 100.0 and high - low == pytest.approx(10.0)
    assert score_limits([0.5]) == (0.0, 10.0)
    assert score_limits([40.0, 80.0]) == pytest.approx((39.0, 81.0))
