"""The report's figures as PNG bytes: pure functions from numbers to images (no file is written here).

Axes are kept honest: score axes span at least :data:`MIN_SCORE_SPAN` points, so a one-point
difference never fills the plot; counts, bytes and losses start at zero; rounds are whole numbers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

from coopasd.dcase.metrics import MAX_FPR

MIN_SCORE_SPAN = 10.0  # points (%): the smallest y-range of a score plot
COLORS = {
    "federated": "#1f77b4",
    "centralized": "#d62728",
    "local": "#2ca02c",
    "local-only": "#2ca02c",
    "floor": "#7f7f7f",
    "source": "#1f77b4",
    "target": "#ff7f0e",
    "normal": "#1f77b4",
    "anomalous": "#d62728",
}
REFERENCE_STYLES = {"centralized": "--", "local-only": "-.", "floor": ":"}


@dataclass(frozen=True)
class Curve:
    """One ROC curve: ``scores`` and ``is_anomaly`` are ``(n,)`` arrays of the same clips."""

    label: str
    scores: np.ndarray
    is_anomaly: np.ndarray


@dataclass(frozen=True)
class Histogram:
    """One histogram panel: anomaly scores of normal and anomalous clips, and the decision threshold."""

    title: str
    normal: np.ndarray
    anomalous: np.ndarray
    threshold: float | None


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A figure of ``rows`` x ``cols`` panels of ``width`` x ``height`` inches each, with fixed margins
    (cheaper than automatic layout: these pages draw many figures). Returns (figure, axes list)."""
    from matplotlib.figure import Figure

    w, h = width * cols, height * rows
    fig = Figure(figsize=(w, h))
    grid = {
        "left": 0.6 / w,
        "right": 1 - 0.15 / w,
        "bottom": 0.55 / h,
        "top": 1 - 0.35 / h,
        "wspace": 0.75 / max(width - 0.75, 0.5),
        "hspace": 0.9 / max(height - 0.9, 0.5),
    }
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=grid)
    return fig, list(axes.flat)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    return buffer.getvalue()


def _grid(n: int, ncols: int, width: float, height: float):
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig, axes = _figure(width, height, rows, cols)
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def _panel(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels and few ticks for a small panel (a title drawn as text: cheaper to lay out)."""
    ax.text(0.5, 1.03, title, transform=ax.transAxes, ha="center", va="bottom", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.locator_params(nbins=5)
    ax.tick_params(labelsize=7)


def _color(label: str, index: int) -> str:
    key = label.split(" ")[0]
    return COLORS.get(key, f"C{index}")


def score_limits(values: Sequence[float], span: float = MIN_SCORE_SPAN) -> tuple[float, float]:
    """A y-range in points (0-100) holding every value, at least ``span`` wide and inside 0-100."""
    lo, hi = min(values), max(values)
    width = max(hi - lo + 2.0, span)
    mid = (lo + hi) / 2
    low = min(max(mid - width / 2, 0.0), 100.0 - width)
    return max(low, 0.0), min(low + width, 100.0)


def roc_png(panels: Sequence[tuple[str, Sequence[Curve]]], ncols: int = 3) -> bytes:
    """ROC curves, one panel per title; each curve's AUC in its legend; the pAUC region shaded."""
    fig, axes = _grid(len(panels), ncols, 3.4, 3.2)
    for ax, (title, curves) in zip(axes, panels, strict=True):
        ax.axvspan(0, MAX_FPR, color="#eeeeee", zorder=0, label=f"pAUC region (FPR <= {MAX_FPR:g})")
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, linestyle=":", label="chance")
        for i, curve in enumerate(curves):
            fpr, tpr, _ = roc_curve(curve.is_anomaly, curve.scores)
            auc = roc_auc_score(curve.is_anomaly, curve.scores)
            ax.plot(fpr, tpr, color=_color(curve.label, i), label=f"{curve.label}: AUC {100 * auc:.1f}%")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        _panel(ax, title, "false alarm rate (normal clips flagged)", "detection rate (anomalies caught)")
        ax.legend(fontsize=6.5, loc="lower right")
    return _png(fig)


def histogram_png(panels: Sequence[Histogram], ncols: int = 4) -> bytes:
    """Score histograms of normal vs anomalous clips, one panel per machine type, section and domain,
    with the decision threshold as a vertical line."""
    fig, axes = _grid(len(panels), ncols, 3.2, 2.5)
    for ax, panel in zip(axes, panels, strict=True):
        both = np.concatenate([panel.normal, panel.anomalous])
        top = float(both.max()) if both.size else 1.0
        if panel.threshold is not None and np.isfinite(panel.threshold):
            top = max(top, panel.threshold)
        bottom = float(both.min()) if both.size else 0.0
        bins = np.linspace(bottom, top + 1e-9, 25)
        for values, name in ((panel.normal, "normal"), (panel.anomalous, "anomalous")):
            if values.size:
                ax.hist(
                    values,
                    bins=bins,
                    histtype="stepfilled",
                    alpha=0.55,
                    color=COLORS[name],
                    label=f"{name} ({values.size})",
                )
        if panel.threshold is not None and np.isfinite(panel.threshold):
            ax.axvline(panel.threshold, color="black", linestyle="--", linewidth=1.2, label="decision threshold")
        _panel(ax, panel.title, "anomaly score", "clips")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.legend(fontsize=6.5)
    return _png(fig)


def _integer_rounds(ax, xs: Sequence[float]) -> None:
    """Whole-number x ticks: every value where there are at most 20, else a whole-number locator."""
    values = sorted({int(x) for x in xs})
    if 0 < len(values) <= 20 and all(float(x).is_integer() for x in xs):
        ax.set_xticks(values)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def rounds_png(points: Sequence[tuple[int, float]], references: Mapping[str, float]) -> bytes:
    """The federated official score per round (fractions), with reference modes as horizontal lines."""
    fig, (ax,) = _figure(7.5, 3.8)
    values = [100 * v for _, v in points] + [100 * v for v in references.values()]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, [100 * y for y in ys], marker="o", color=COLORS["federated"], label="federated (per round)")
    for i, (name, value) in enumerate(references.items()):
        ax.axhline(
            100 * value,
            color=COLORS.get(name, f"C{i + 3}"),
            linestyle=REFERENCE_STYLES.get(name, "--"),
            label=f"{name}: {100 * value:.2f}%",
        )
    if values:
        ax.set_ylim(*score_limits(values))
    last = max((x for x, _ in points), default=1)
    ax.set_xlim(0.5, last + 0.5)
    _integer_rounds(ax, [x for x, _ in points] or [1])
    ax.set_xlabel("federated round")
    ax.set_ylabel("official score (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def bytes_png(rounds: Sequence[Mapping]) -> bytes:
    """Megabytes sent over the network per round, all factories together: server -> factories and back."""
    fig, (ax,) = _figure(7.5, 3.2)
    xs = np.array([int(r["round"]) for r in rounds])
    down = np.array([r.get("bytes_down_per_factory", 0) * r.get("asked", 0) / 1e6 for r in rounds])
    up = np.array([sum(r.get("bytes_up", {}).values()) / 1e6 for r in rounds])
    ax.bar(xs - 0.2, down, width=0.4, color="#9ecae1", label="server -> factories (model parameters)")
    ax.bar(xs + 0.2, up, width=0.4, color="#3182bd", label="factories -> server (model parameters)")
    ax.set_ylim(0, max(float(np.max(down, initial=0)), float(np.max(up, initial=0)), 1e-3) * 1.25)
    _integer_rounds(ax, list(xs))
    ax.set_xlabel("federated round")
    ax.set_ylabel("MB per round")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    return _png(fig)


def training_png(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], xlabel: str) -> bytes:
    """Training-loss curves: (label, x values, losses) per series; the y axis starts at zero."""
    fig, (ax,) = _figure(7.5, 3.4)
    top, every_x = 0.0, []
    for i, (label, xs, ys) in enumerate(series):
        ax.plot(xs, ys, marker="o", markersize=3, color=_color(label, i), label=label)
        top, every_x = max([top, *ys]), every_x + list(xs)
    ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)
    _integer_rounds(ax, every_x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss (ArcFace)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(series) > 4 else 1)
    return _png(fig)
