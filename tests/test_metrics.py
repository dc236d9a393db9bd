from __future__ import annotations

import numpy as np
import pytest

from coopasd.dcase.metrics import (
    decision_quality,
    domain_auc,
    domain_pauc,
    harmonic_mean,
    pauc,
    section_metrics,
    summarize,
)
from coopasd.errors import MetricsError

S, T = "source", "target"


def test_hand_computed_case():
    # normals: 0.1 (source), 0.4 (target); anomalies 0.35, 0.8
    scores, anomaly, domains = [0.1, 0.4, 0.35, 0.8], [False, False, True, True], [S, T, S, T]
    assert domain_auc(scores, anomaly, domains, S) == 1.0  # both anomalies above 0.1
    assert domain_auc(scores, anomaly, domains, T) == 0.5  # 0.8 > 0.4, 0.35 < 0.4
    # ROC over all: TPR 0.5 from FPR 0 to 0.5 -> partial area 0.05 up to FPR 0.1
    # standardized: 0.5 * (1 + (0.05 - 0.005) / (0.1 - 0.005)) = 0.736842...
    assert pauc(scores, anomaly) == pytest.approx(0.5 * (1 + 0.045 / 0.095))


def test_ties_count_half():
    assert domain_auc([0.5, 0.5], [False, True], [S, S], S) == 0.5


def test_all_equal_scores_are_chance():
    scores = [0.3] * 6
    anomaly = [False, False, False, True, True, True]
    domains = [S, T, S, S, T, T]
    m = section_metrics("fan", "00", scores, anomaly, domains)
    assert m.values == (0.5, 0.5, 0.5)


def test_single_anomaly():
    scores = [0.1, 0.3, 0.2, 0.4, 0.25]
    anomaly = [False, False, False, False, True]
    domains = [S, S, T, T, S]
    m = section_metrics("fan", "00", scores, anomaly, domains)
    assert m.auc_source == 0.5 and m.auc_target == 0.5  # above one of the two normals of each domain
    # TPR stays 0 up to FPR 0.5: partial area 0 -> 0.5 * (1 - 0.005 / 0.095)
    assert m.pauc == pytest.approx(0.5 * (1 - 0.005 / 0.095))
    assert m.n_anomalies == 1 and m.n_clips == 5


def test_anomalies_of_other_domain_count_in_each_auc():
    # the target anomaly (0.9) enters AUC(source) too, as the official evaluator does
    scores, anomaly, domains = [0.5, 0.6, 0.9], [False, False, True], [S, T, T]
    assert domain_auc(scores, anomaly, domains, S) == 1.0


def test_missing_domain_is_a_clear_error():
    with pytest.raises(MetricsError, match="pump section 00: no normal clips of the target domain"):
        section_metrics("pump", "00", [0.1, 0.9], [False, True], [S, S])


def test_no_anomalies_is_an_error():
    with pytest.raises(MetricsError, match="no anomalous clips"):
        section_metrics("pump", "00", [0.1, 0.9], [False, False], [S, T])


def test_nan_scores_are_an_error():
    with pytest.raises(MetricsError, match="NaN"):
        pauc([0.1, float("nan")], [False, True])


def test_harmonic_mean_floors_zero_at_epsilon():
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert 0 < harmonic_mean([0.0, 1.0, 1.0]) < 1e-14


def test_summary_official_score_is_hmean_of_all_values():
    a = section_metrics("fan", "00", [0.1, 0.4, 0.35, 0.8], [False, False, True, True], [S, T, S, T])
    b = section_metrics("valve", "00", [0.3] * 4, [False, False, True, True], [S, T, S, T])
    summary = summarize([a, b])
    values = [*a.values, *b.values]
    assert summary["official_score"] == pytest.approx(len(values) / sum(1 / v for v in values))
    assert summary["arithmetic_mean"]["all"] == pytest.approx(np.mean(values))
    assert summary["harmonic_mean"]["auc_target"] == pytest.approx(2 / (1 / 0.5 + 1 / 0.5))
    assert summary["machines"]["fan"]["auc_source"] == 1.0
    assert summary["machines"]["valve"]["sections"]["00"]["pauc"] == 0.5


def test_per_domain_extras_as_the_official_evaluator_computes_them():
    # source clips: a normal (0.1, no alarm) and an anomaly (0.35, missed); target: a normal (0.4, false
    # alarm) and an anomaly (0.8, caught)
    scores, anomaly, domains = [0.1, 0.4, 0.35, 0.8], [False, False, True, True], [S, T, S, T]
    assert decision_quality(anomaly, [0, 1, 0, 1], domains, S) == (0.0, 0.0, 0.0)  # no alarm: 0, not NaN
    assert decision_quality(anomaly, [0, 1, 0, 1], domains, T) == pytest.approx((0.5, 1.0, 2 / 3))
    # pAUC of a domain: its normals + ALL anomalies; target normal 0.4 sits between the anomalies
    assert domain_pauc(scores, anomaly, domains, S) == 1.0
    assert domain_pauc(scores, anomaly, domains, T) == pytest.approx(0.5 * (1 + 0.045 / 0.095))
    m = section_metrics("fan", "00", scores, anomaly, domains, decisions=[0, 1, 0, 1])
    assert (m.f1_target, m.recall_source) == (pytest.approx(2 / 3), 0.0)
    assert m.values == section_metrics("fan", "00", scores, anomaly, domains).values  # the official values stay
    assert (
        "precision_source"
        not in summarize([section_metrics("fan", "00", scores, anomaly, domains)])["machines"]["fan"]["sections"]["00"]
    )
