"""The shipped Grafana dashboard's structure and queries, without Grafana.

The queries themselves are parsed by promtool in test_alerts_dashboard.py;
here: the variables, the layout, and that each panel of the drift dashboard
asks for the series it is about.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from tests.chart.tooling import FILES_DIR, load_yaml
from tests.dashboard import (
    DASHBOARD,
    VARIABLE_VALUES,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    substitute,
    variables_in,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
# Grafana's own variables, defined without a templating entry.
BUILT_IN_VARIABLES = {"__rate_interval", "__interval", "__range"}

# Series, or recording rules, that must be drawn together in one panel: each
# quantity with what it is judged against.
PANELS_OF_SERIES = [
    (
        "driftstream:window_log_loss:mean",
        "driftstream:baseline_log_loss:mean",
        "driftstream_threshold_log_loss",
    ),
    ("driftstream:window_log_loss_zscore", "driftstream_threshold_log_loss_zscore"),
    ("driftstream:loss_drift_statistic:max", "driftstream:loss_drift_alarms:sum"),
    ("driftstream:prediction_window_psi:max", "driftstream_threshold_psi"),
    (
        "driftstream:prediction_window_expected_log_loss:mean",
        "driftstream:window_log_loss:mean",
    ),
    ("driftstream_window_brier_score",),
    ("driftstream:window_calibration_error:max",),
    ("driftstream_window_positive_rate", "driftstream_window_mean_probability"),
    ("driftstream:label_coverage:ratio", "driftstream_threshold_label_coverage"),
    ("driftstream_join_delay_seconds_bucket",),
    ("driftstream_pending_entries",),
    ("driftstream_consumer_lag_messages",),
    ("driftstream_invalid_messages_total",),
]

# A metric or recording-rule name, and the label matchers after it, if any.
_SELECTOR = re.compile(r"(?<![\w:])(driftstream[_:][\w:]*)(\{[^}]*\})?")
# Series without a model label, or (expired, evictions: the outcome side has
# an empty model) drawn for the whole stream on purpose.
WHOLE_STREAM = {
    "driftstream_assigned_partitions",
    "driftstream_consumer_lag_messages",
    "driftstream_duplicates_total",
    "driftstream_evictions_total",
    "driftstream_expired_total",
    "driftstream_invalid_messages_total",
    "driftstream_kafka_reachable",
    "driftstream_late_events_total",
    "driftstream_outcomes_total",
    "driftstream_pending_entries",
}


def _panels() -> list[dict[str, Any]]:
    return [p for p in iter_panels(load_dashboard()) if p["type"] != "row"]


def _targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in _panels() for target in panel["targets"]]


def _names_in(expr: str) -> set[str]:
    return {name for name, _ in _SELECTOR.findall(expr)}


def _query_variables() -> list[dict[str, Any]]:
    variables = load_dashboard()["templating"]["list"]
    return [v for v in variables if v["type"] == "query"]


def test_panels_targets_and_variables_use_the_datasource_variable() -> None:
    uses = {f"panel {panel['title']!r}": panel.get("datasource") for panel in _panels()}
    uses |= {
        f"target {target['refId']} of {panel['title']!r}": target.get("datasource")
        for panel, target in _targets()
    }
    uses |= {f"variable {v['name']}": v.get("datasource") for v in _query_variables()}

    assert {where: use for where, use in uses.items() if use != DATASOURCE} == {}


def test_every_panel_has_targets_with_an_expression() -> None:
    for panel in _panels():
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids, f"panel {panel['title']!r} has no query"
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']!r} {target['refId']}"


def test_every_referenced_variable_is_defined() -> None:
    dashboard = load_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    texts = [target["expr"] for _, target in _targets()]
    texts += [target["datasource"]["uid"] for _, target in _targets()]
    texts += [panel["datasource"]["uid"] for panel in _panels()]
    texts += [v["query"]["query"] for v in _query_variables()]

    referenced = set().union(*(variables_in(text) for text in texts))

    assert referenced - defined - BUILT_IN_VARIABLES == set()
    assert {"datasource", "model", "version", "window"} <= referenced


def test_every_variable_in_a_query_has_a_substitute() -> None:
    in_queries = set().union(*(variables_in(t["expr"]) for _, t in _targets()))

    assert in_queries - VARIABLE_VALUES.keys() == set()


def test_version_and_window_variables_follow_the_model() -> None:
    variables = {v["name"]: v for v in _query_variables()}

    for name, all_value in (("version", ".*"), ("window", ".+")):
        assert variables[name]["query"]["query"] == (
            f'label_values(driftstream_window_events{{model=~"$model"}}, {name})'
        )
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["allValue"] == all_value


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in iter_panels(load_dashboard())]

    assert sorted(ids) == sorted(set(ids))


def test_panels_fit_the_grid_without_overlapping() -> None:
    grids = {
        f"{panel['id']} {panel['title']!r}": panel["gridPos"]
        for panel in load_dashboard()["panels"]
    }
    for where, grid in grids.items():
        assert grid["w"] > 0 and grid["h"] > 0, where
        assert grid["x"] >= 0 and grid["y"] >= 0, where
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, where

    for (one, a), (other, b) in itertools.combinations(grids.items(), 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, f"panel {one} overlaps panel {other}"


@pytest.mark.parametrize("names", PANELS_OF_SERIES, ids=lambda names: names[0])
def test_a_panel_draws_the_series_together(names: tuple[str, ...]) -> None:
    drawn = [
        set().union(*(_names_in(target["expr"]) for target in panel["targets"]))
        for panel in _panels()
    ]

    assert any(set(names) <= names_of_panel for names_of_panel in drawn), names


def test_change_detector_draws_its_alarm_line_and_alarm_counts() -> None:
    [panel] = [
        p
        for p in _panels()
        if any("loss_drift_statistic" in t["expr"] for t in p["targets"])
    ]
    defaults = panel["fieldConfig"]["defaults"]
    [alarms] = [t["expr"] for t in panel["targets"] if "loss_drift_alarms" in t["expr"]]

    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert [step["value"] for step in defaults["thresholds"]["steps"]] == [None, 1]
    # Alarms are counted on the sum over replicas, with delta(): a partition
    # moving between replicas carries its count, which increase() would take
    # for a counter reset followed by every alarm since the start.
    assert re.search(r"\bdelta\(driftstream:loss_drift_alarms:sum\{", alarms)
    assert "increase(" not in alarms


def test_invalid_messages_are_drawn_by_reason() -> None:
    exprs = [
        target["expr"]
        for panel, target in _targets()
        if panel["type"] == "timeseries"
        and "driftstream_invalid_messages_total" in target["expr"]
    ]

    assert any(re.match(r"sum by \([^)]*\breason\b", expr) for expr in exprs)
    assert all("rate(" in expr for expr in exprs)


def test_model_series_follow_the_model_version_and_window_variables() -> None:
    unfiltered = []
    for panel, target in _targets():
        if panel["type"] == "stat":
            continue  # the stats at the top describe the whole stream
        for name, matchers in _SELECTOR.findall(target["expr"]):
            wanted = ['model=~"$model"']
            if not name.startswith("driftstream_threshold_"):
                wanted.append('version=~"$version"')
            if "window_" in name:
                wanted.append('window=~"$window"')
            if name not in WHOLE_STREAM and not all(w in matchers for w in wanted):
                unfiltered.append(f"{panel['title']!r}: {name}{matchers}")

    assert unfiltered == []


def test_recording_rules_on_the_dashboard_are_shipped() -> None:
    recorded = {
        rule["record"]
        for group in load_yaml(FILES_DIR / "alerts.yaml")["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    used = set().union(*(_names_in(t["expr"]) for _, t in _targets()))

    assert {name for name in used if ":" in name} - recorded == set()


def test_dashboard_queries_substitute_every_variable() -> None:
    queries = dashboard_queries(DASHBOARD)

    assert len(queries) == len(_targets())
    assert all("$" not in query for query in queries)
    assert (
        'driftstream:window_log_loss:mean{model=~".+", version=~".*", window=~"1h"}'
        in queries
    )


def test_dashboard_queries_take_values_for_some_variables() -> None:
    queries = dashboard_queries(values={"model": "churn"})

    assert any('model=~"churn"' in query for query in queries)
    assert not any('model=~".+"' in query for query in queries)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(x[$__rate_interval])", "rate(x[5m])"),
        ('x{m=~"${model}"}', 'x{m=~".+"}'),
        ('x{m=~"${model:regex}"}', 'x{m=~".+"}'),
        ('x{w=~"[[window]]"}[$__interval]', 'x{w=~"1h"}[1m]'),
    ],
)
def test_substitute_reads_grafana_variable_syntaxes(expr: str, expected: str) -> None:
    assert substitute(expr) == expected


def test_substitute_names_a_variable_it_has_no_value_for() -> None:
    with pytest.raises(ValueError, match=r"no value for variable \$segment in 'x"):
        substitute('x{s=~"$segment"}')
