"""Item 4 of issue #17: a comparison tells each factory what joining gave it."""

from __future__ import annotations

import pytest

from coopasd.dcase.metrics import SectionMetrics, summarize
from coopasd.dcase.results import compare_modes
from coopasd.report.page import factory_gain_table
from coopasd.report.tables import comparison_rows

UNITS = {"north": ["pump/00", "valve/01"], "south": ["pump/01"]}


def _mode(values: dict[str, tuple[float, float, float]]) -> dict:
    sections = [SectionMetrics(*unit.split("/"), *v, n_clips=20, n_anomalies=10) for unit, v in values.items()]
    return summarize(sections) | {"factory_units": UNITS}


@pytest.fixture
def modes() -> dict[str, dict]:
    return {
        "federated": _mode({"pump/00": (0.8, 0.8, 0.8), "pump/01": (0.9, 0.9, 0.6), "valve/01": (0.8, 0.8, 0.8)}),
        "centralized": _mode({"pump/00": (0.8, 0.8, 0.8), "pump/01": (0.9, 0.9, 0.9), "valve/01": (0.8, 0.8, 0.8)}),
        "local": _mode({"pump/00": (0.7, 0.7, 0.7), "pump/01": (0.9, 0.9, 0.9), "valve/01": (0.75, 0.75, 0.75)}),
    }


def test_each_factory_gets_its_own_score_and_gain_in_points(modes):
    factories = compare_modes(modes)["factories"]
    north, south = factories["north"], factories["south"]
    assert north["units"] == ["pump/00", "valve/01"]
    assert north["federated"] == pytest.approx(0.8)
    assert north["local"] == pytest.approx(6 / (3 / 0.7 + 3 / 0.75))  # harmonic mean of its six values
    assert north["gain_points"] == pytest.approx(100 * (0.8 - 6 / (3 / 0.7 + 3 / 0.75)))
    assert south["federated"] == pytest.approx(3 / (2 / 0.9 + 1 / 0.6))  # 0.771...
    assert south["gain_points"] == pytest.approx(100 * (3 / (2 / 0.9 + 1 / 0.6) - 0.9))  # joining cost south
    assert south["vs_centralized_points"] == pytest.approx(south["gain_points"])


def test_the_report_and_the_printed_table_show_each_factory(modes):
    summary = compare_modes(modes)
    html = factory_gain_table(summary)
    assert "north" in html and "pump/00, valve/01" in html and 'data-src="factories/south/gain_points"' in html
    _, rows = comparison_rows(modes)
    south = next(r for r in rows if r[0] == "factory south")
    assert south[-1] == f"{summary['factories']['south']['gain_points']:+.2f} pt"


def test_older_comparisons_without_factory_units_still_compare(modes):
    for summary in modes.values():
        del summary["factory_units"]
    assert "factories" not in compare_modes(modes) and factory_gain_table(compare_modes(modes)) == ""
