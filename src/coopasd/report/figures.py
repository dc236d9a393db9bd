"""Which figures a report page shows, with their captions: from the runs' summaries (``metrics.json``,
``comparison.json``) and scored sections to :class:`coopasd.report.page.Figure` (drawing is
:mod:`coopasd.report.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from coopasd.config.settings import RunConfig
from coopasd.dcase.evaluation import SectionScores
from coopasd.dcase.results import MODES
from coopasd.report import plots
from coopasd.report.page import MODE_NAMES, Figure
from coopasd.report.plots import Curve, Histogram


def bytes_caption(rounds: Sequence[Mapping]) -> str:
    per = max((r.get("bytes_down_per_factory", 0) for r in rounds), default=0)
    total = sum(
        r.get("bytes_down_per_factory", 0) * r.get("asked", 0) + sum(r.get("bytes_up", {}).values()) for r in rounds
    )
    return (
        f"Model parameters sent per round, all factories together: one transfer is {per / 1e6:.2f} MB per factory and "
        f"direction; {total / 1e6:.1f} MB in all over {len(rounds)} round(s). Audio, features and scores never cross."
    )


ROUNDS_CAPTION = (
    "Official score of the federated model after each round, measured by the factories on their own test clips "
    "(the last point includes the local personalization epoch). The y axis spans at least 10 points, so small "
    "differences look small."
)
ROC_CAPTION = (
    "Detection rate against false-alarm rate as the threshold moves, per machine type and domain: each domain's "
    "normal clips against all anomalous clips (the clips of AUC for that domain). The closer to the top-left "
    "corner, the better; the dotted diagonal is guessing. Shaded: the low false-alarm region that pAUC measures."
)
HIST_CAPTION = (
    "Anomaly scores of the test clips per machine type and domain: normal clips should lie left of the dashed "
    "decision threshold, anomalous ones right of it. Normal clips right of it are false alarms; anomalous clips "
    "left of it are missed."
)
LOSS_CAPTION = (
    "Loss of the encoder's training task (ArcFace over machine attributes and pseudo-anomalies) on the training "
    "clips. Falling means the encoder learns; it does not by itself mean better detection."
)


@dataclass(frozen=True)
class Labelled:
    """A section's scores with labels: ``(n,)`` scores, anomaly flags and domain names."""

    machine_type: str
    section: str
    scores: np.ndarray
    is_anomaly: np.ndarray
    domains: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.machine_type}/{self.section}"

    def domain_curve(self, label: str, domain: str) -> Curve:
        """That domain's normal clips + all anomalous clips (the clips of AUC(domain))."""
        keep = self.is_anomaly | (self.domains == domain)
        return Curve(label, self.scores[keep], self.is_anomaly[keep])


def labelled(sections: Sequence) -> list[Labelled]:
    """:class:`Labelled` of every evaluable :class:`coopasd.dcase.evaluation.SectionScores`."""
    return [
        Labelled(
            s.machine_type,
            s.section,
            np.asarray(s.scores, dtype=np.float64),
            np.array([c.label == "anomaly" for c in s.clips]),
            np.array([c.domain or "" for c in s.clips]),
        )
        for s in sections
        if s.evaluable
    ]


def run_roc_png(sections: Sequence[Labelled]) -> bytes:
    panels = [
        (f"{s.machine_type} section {s.section}", [s.domain_curve(d, d) for d in ("source", "target")])
        for s in sections
    ]
    return plots.roc_png(panels)


def modes_roc_png(by_mode: Mapping[str, Sequence[Labelled]], names: Mapping[str, str]) -> bytes:
    """One panel per machine type, section and domain; one curve per mode."""
    first = next(iter(by_mode.values()))
    panels = []
    for sec in first:
        for domain in ("source", "target"):
            curves = [
                s.domain_curve(names[mode], domain) for mode, secs in by_mode.items() for s in secs if s.key == sec.key
            ]
            panels.append((f"{sec.machine_type} {sec.section}, {domain} domain", curves))
    return plots.roc_png(panels, ncols=4)


def histograms_png(sections: Sequence[Labelled], thresholds: Mapping[str, float]) -> bytes:
    panels = []
    for s in sections:
        for domain in ("source", "target"):
            mine = s.domains == domain
            panels.append(
                Histogram(
                    f"{s.machine_type} {s.section}, {domain} domain",
                    s.scores[mine & ~s.is_anomaly],
                    s.scores[mine & s.is_anomaly],
                    thresholds.get(s.key),
                )
            )
    return plots.histogram_png(panels)


def loss_series(summary: Mapping, label: str, per_round_epochs: int = 0) -> list[tuple[str, list, list]]:
    """Training-loss series of one mode's summary: per participant of ``training`` (one point per
    epoch) and, federated, the rounds' mean loss (x = round, or round x ``per_round_epochs`` epochs)."""
    series = []
    training = summary.get("training") or {}
    for name, epochs in training.items():
        if epochs:
            tag = label if len(training) == 1 else f"{label}: {name}"
            series.append((tag, [e["epoch"] for e in epochs], [e["loss"] for e in epochs]))
    rounds = [r for r in summary.get("rounds") or [] if r.get("train_loss") is not None]
    if rounds:
        xs = [r["round"] * (per_round_epochs or 1) for r in rounds]
        series.append((f"{label} (mean over factories)", xs, [r["train_loss"] for r in rounds]))
    return series


def mean_series(series: Sequence[tuple[str, list, list]], label: str) -> list[tuple[str, list, list]]:
    """Several participants' curves of equal length as their mean (one series), else unchanged."""
    if len(series) < 2 or len({tuple(x) for _, x, _ in series}) != 1:
        return list(series)
    return [
        (f"{label} (mean of {len(series)} factories)", series[0][1], list(np.mean([y for _, _, y in series], axis=0)))
    ]


def run_figures(summary: Mapping, sections: Sequence[SectionScores] | None, cfg: RunConfig | None) -> list[Figure]:
    """The figures of one run's page (score plots only where ``sections`` carry labels)."""
    figures = []
    rounds = summary.get("rounds") or []
    points = [(r["round"], r["official_score"]) for r in rounds if r.get("official_score") is not None]
    if points:
        figures.append(
            Figure("rounds", "Official score per federated round", plots.rounds_png(points, {}), ROUNDS_CAPTION)
        )
    scored = labelled(sections or [])
    if scored:
        figures.append(Figure("roc", "ROC curves per machine type and domain", run_roc_png(scored), ROC_CAPTION))
        thresholds = summary.get("thresholds") or {}
        figures.append(
            Figure(
                "scores",
                "Score distributions and the decision threshold",
                histograms_png(scored, thresholds),
                HIST_CAPTION,
            )
        )
    series = loss_series(summary, str(summary.get("mode", "training")))
    if series:
        xlabel = "federated round" if summary.get("rounds") else "epoch"
        figures.append(Figure("training", "Training loss", plots.training_png(series, xlabel), LOSS_CAPTION))
    if any(r.get("bytes_up") for r in rounds):
        figures.append(Figure("bytes", "Bytes on the wire per round", plots.bytes_png(rounds), bytes_caption(rounds)))
    return figures


def comparison_figures(
    summary: Mapping, modes: Mapping[str, Mapping], sections: Mapping[str, Sequence[SectionScores] | None], cfg
) -> list[Figure]:
    """The figures of a comparison page: rounds with references, ROC per mode, the federated model's
    score histograms, training losses, bytes per round."""
    figures = []
    references = {"centralized": modes["centralized"]["official_score"], "local-only": modes["local"]["official_score"]}
    if summary.get("floor"):
        references["floor"] = summary["floor"]["official_score"]
    rounds = summary.get("rounds") or []
    points = [(r["round"], r["official_score"]) for r in rounds if r.get("official_score") is not None]
    caption = (
        ROUNDS_CAPTION
        + " Horizontal lines: centralized and local-only after the same training budget"
        + (", and the non-learned floor (no training)." if summary.get("floor") else ".")
    )
    figures.append(Figure("rounds", "Federated learning round by round", plots.rounds_png(points, references), caption))
    scored = {m: labelled(s) for m, s in sections.items() if s}
    if len(scored) == len(MODES):
        names = {m: MODE_NAMES[m] for m in MODES}
        figures.append(
            Figure("roc", "ROC curves per machine type and domain", modes_roc_png(scored, names), ROC_CAPTION)
        )
    if scored.get("federated"):
        thresholds = modes["federated"].get("thresholds") or {}
        hist = histograms_png(scored["federated"], thresholds)
        figures.append(Figure("scores", "Score distributions of the federated model", hist, HIST_CAPTION))
    epochs = cfg.federation.local_epochs if cfg else 1
    series = loss_series(modes["federated"], "federated", per_round_epochs=epochs)
    series += loss_series(modes["centralized"], "centralized")
    series += mean_series(loss_series(modes["local"], "local-only"), "local-only")
    if series:
        xlabel = "training epoch (federated: round x local epochs)"
        figures.append(Figure("training", "Training loss", plots.training_png(series, xlabel), LOSS_CAPTION))
    if any(r.get("bytes_up") for r in rounds):
        figures.append(Figure("bytes", "Bytes on the wire per round", plots.bytes_png(rounds), bytes_caption(rounds)))
    return figures
