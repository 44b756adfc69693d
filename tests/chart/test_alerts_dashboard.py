"""The shipped alert rules and Grafana dashboard (helm/driftstream/files/)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tooling import FILES_DIR, REPO_ROOT, load_yaml, run
from tests.dashboard import dashboard_queries

ALERTS = FILES_DIR / "alerts.yaml"
ALERTS_TEST = FILES_DIR / "alerts_test.yaml"
DASHBOARD = FILES_DIR / "dashboard.json"
RUNBOOK_BASE = "https://example.com/driftstream/runbooks"
SEVERITIES = {"critical", "warning", "info"}


def _all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def _rules() -> list[dict[str, Any]]:
    """The alerting rules (the recording rules have no alert, labels or for:)."""
    return [rule for rule in _all_rules() if "alert" in rule]


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exported_metrics() -> set[str]:
    """Series names driftstream exports, from the README's metric reference
    (tests/unit/test_docs.py keeps that table equal to the exporter)."""
    names: set[str] = set()
    readme = (REPO_ROOT / "README.md").read_text()
    for name, kind in re.findall(r"^\| `(driftstream_\w+)` \| (\w+) \|", readme, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert len(names) > 10, "the README's metric reference was not found"
    return names


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bdriftstream_\w+", expr))


def test_promtool_check_rules_passes(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_passes(promtool: str) -> None:
    result = run([promtool, "test", "rules", ALERTS_TEST.name], cwd=FILES_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts <= fired
    assert alerts <= silent


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_alert_carries_severity_texts_runbook_and_for(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys()
    assert rule["annotations"]["runbook_url"] == (
        f"{RUNBOOK_BASE}#{rule['alert'].lower()}"
    )
    assert re.fullmatch(r"[0-9]+[smh]", rule["for"])


def test_every_alert_has_a_runbook_section() -> None:
    docs = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "deploy.md"]
    text = "\n".join(path.read_text() for path in docs if path.exists())
    headings = set(re.findall(r"^#+ (\w+)\s*$", text, re.M))
    assert {rule["alert"] for rule in _rules()} <= headings


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = _exported_metrics()
    used = set().union(*(_metrics_in(rule["expr"]) for rule in _all_rules()))
    for panel in _panels():
        for target in panel["targets"]:
            used |= _metrics_in(target["expr"])
    for variable in _dashboard()["templating"]["list"]:
        used |= _metrics_in(json.dumps(variable.get("query", "")))
    assert used - exported == set()


def test_dashboard_has_datasource_and_model_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query"
    assert model["query"]["query"] == "label_values(driftstream_window_events, model)"
    assert model["multi"] and model["includeAll"]


def test_dashboard_panels_use_the_datasource_variable() -> None:
    uses = [panel["datasource"] for panel in _panels()]
    uses += [target["datasource"] for panel in _panels() for target in panel["targets"]]
    assert uses
    assert all(use == {"type": "prometheus", "uid": "${datasource}"} for use in uses)


def test_dashboard_has_the_expected_panels() -> None:
    titles = {panel["title"] for panel in _panels()}
    assert {
        "Window log loss",
        "Window events",
        "Events per second",
        "Pending entries",
        "Consumer lag",
        "Invalid messages",
        "Join delay quantiles",
    } <= titles
    ids = [panel["id"] for panel in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_model_panels_follow_the_model_variable() -> None:
    per_model = ("window_", "predictions_total", "joined_total", "join_delay")
    # The stat panels at the top describe the whole stream, every model.
    for panel in (p for p in _panels() if p["type"] != "stat"):
        for target in panel["targets"]:
            if any(f"driftstream_{name}" in target["expr"] for name in per_model):
                assert 'model=~"$model"' in target["expr"], panel["title"]


def test_join_delay_panel_shows_quantiles() -> None:
    [panel] = [p for p in _panels() if p["title"] == "Join delay quantiles"]
    quantiles = [
        re.match(r"histogram_quantile\(([0-9.]+),", target["expr"])
        for target in panel["targets"]
    ]
    assert [match[1] for match in quantiles if match] == ["0.5", "0.9", "0.99"]
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard_query_{number}", "expr": expr}
        for number, expr in enumerate(dashboard_queries(DASHBOARD))
    ]
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))

    result = run([promtool, "check", "rules", str(rules_file)])

    assert result.returncode == 0, result.stdout + result.stderr
