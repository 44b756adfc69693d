"""The shape of the shipped rules beyond what promtool checks.

promtool parses every expression and runs files/alerts_test.yaml, but a
recording rule's name misspelt in an alert parses and stays silent forever, a
threshold matched without aggregation fails only once two replicas export it,
and an Alertmanager matcher naming no alert is valid configuration. These
tests catch those.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.chart.tooling import FILES_DIR, REPO_ROOT, load_yaml, run

ALERTS = FILES_DIR / "alerts.yaml"
ALERTS_TEST = FILES_DIR / "alerts_test.yaml"
ALERTMANAGER = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
GROUPS = ("driftstream-health", "driftstream-recording", "driftstream-models")
RECORDED = re.compile(r"(?<![\w:])driftstream:\w+(?::\w+)?")
THRESHOLD = re.compile(r"\bdriftstream_threshold_\w+")
# Per-replica shares of a model: a model alert must read their sums instead.
SHARES = re.compile(r"\bdriftstream_(?:prediction_)?(?:window|baseline|loss_drift)\w*")
THRESHOLD_MATCH = (
    r"> on \(namespace, job, model\) group_left\s+"
    r"max by \(namespace, job, model\) \({name}\)"
)


def _groups() -> dict[str, list[dict[str, Any]]]:
    return {group["name"]: group["rules"] for group in load_yaml(ALERTS)["groups"]}


def _recording_rules() -> list[dict[str, Any]]:
    return _groups()["driftstream-recording"]


def _model_alerts() -> list[dict[str, Any]]:
    return _groups()["driftstream-models"]


def _alert_names() -> set[str]:
    return {
        rule["alert"]
        for rules in _groups().values()
        for rule in rules
        if "alert" in rule
    }


def _test_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load_yaml(ALERTS_TEST)["tests"]
    return cases


def test_the_three_groups_hold_one_kind_of_rule_each() -> None:
    groups = _groups()

    assert tuple(groups) == GROUPS
    assert all("record" in rule for rule in groups["driftstream-recording"])
    assert all("alert" in rule for rule in groups["driftstream-health"])
    assert all("alert" in rule for rule in groups["driftstream-models"])


def test_recorded_series_are_recorded_before_they_are_read() -> None:
    # Rules of one group run in order: a rule reading a later one would see
    # the previous evaluation's value; alerts run in their own groups.
    recorded: set[str] = set()
    for rule in _recording_rules():
        assert RECORDED.fullmatch(rule["record"]), rule["record"]
        assert set(RECORDED.findall(rule["expr"])) <= recorded, rule["record"]
        recorded.add(rule["record"])
    for rule in _model_alerts():
        assert set(RECORDED.findall(rule["expr"])) <= recorded, rule["alert"]


@pytest.mark.parametrize("rule", _model_alerts(), ids=lambda rule: rule["alert"])
def test_model_alerts_read_sums_and_aggregated_thresholds(rule: dict[str, Any]) -> None:
    expr = " ".join(rule["expr"].split())

    assert SHARES.findall(expr) == [], "read the recorded sums, not one replica's"
    assert RECORDED.search(expr) or "sum by (namespace, job, model, version)" in expr
    # Every replica exports the thresholds: matched unaggregated, two replicas
    # would make a many-to-many match, which is an evaluation error.
    for name in THRESHOLD.findall(expr):
        pattern = THRESHOLD_MATCH.format(name=name).replace("> on", "[<>]=? on")
        assert re.search(pattern, expr), name


def test_every_recording_rule_is_checked_by_a_promql_expr_test() -> None:
    tested = " ".join(
        check["expr"]
        for case in _test_cases()
        for check in case.get("promql_expr_test", [])
    )

    for rule in _recording_rules():
        assert re.search(rf"(?<![\w:]){rule['record']}(?![\w:])", tested), rule[
            "record"
        ]


def test_model_alerts_fire_in_the_tests_with_their_model_label() -> None:
    names = {rule["alert"] for rule in _model_alerts()}
    fired = [
        (check["alertname"], alert["exp_labels"])
        for case in _test_cases()
        for check in case.get("alert_rule_test", [])
        if check["alertname"] in names
        for alert in check["exp_alerts"]
    ]

    assert {name for name, _ in fired} == names
    assert all("model" in labels for _, labels in fired)


def test_every_alert_has_a_runbook_in_the_runbook_section() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Alert runbooks\n", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^#### (\w+)\s*$", section, re.M)

    assert sorted(headings) == sorted(_alert_names())


def test_alertmanager_matchers_name_shipped_alerts() -> None:
    config = load_yaml(ALERTMANAGER)
    matchers = [m for route in config["route"]["routes"] for m in route["matchers"]]
    for rule in config["inhibit_rules"]:
        matchers += rule["source_matchers"] + rule["target_matchers"]
    named = set().union(*(re.findall(r"Driftstream\w+", m) for m in matchers))

    assert named
    assert named <= _alert_names()


def _route_of(amtool: str, labels: dict[str, str]) -> str:
    result = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            "--tree",
            *(f"{name}={value}" for name, value in labels.items()),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_model_alerts_take_the_model_route(amtool: str) -> None:
    for rule in _model_alerts():
        labels = {"alertname": rule["alert"], "model": "fraud", "version": "7"}
        route = _route_of(amtool, labels | rule["labels"])
        assert 'model=~".+"' in route, rule["alert"]

    for rule in _groups()["driftstream-health"]:
        labels = {"alertname": rule["alert"], "instance": "a:9308"}
        route = _route_of(amtool, labels | rule["labels"])
        assert 'model=~".+"' not in route, rule["alert"]
