"""Read the shipped Grafana dashboard's queries as plain PromQL, for tests.

Grafana fills its variables in before a query reaches Prometheus; the helpers
here do the same with values that select every series (``$model`` becomes
``.+``) and fixed intervals, so a test can parse each query with promtool or
run it against a real Prometheus and require data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "helm/driftstream/files/dashboard.json"
)

# What each variable becomes. The templated ones take a regex (every panel
# filters with `=~`): every model, every version (empty included), and the 1h
# window, which every default configuration has. Grafana's built-in intervals
# take durations a scrape interval of 15 s fills.
VARIABLE_VALUES: Mapping[str, str] = {
    "model": ".+",
    "version": ".*",
    "window": "1h",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}

# $name, ${name}, ${name:format} and the deprecated [[name]].
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


def load_dashboard(path: Path | str = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return dashboard


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a collapsed row holds."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables_in(text: str) -> set[str]:
    """The names of the variables ``text`` refers to."""
    return {next(name for name in match if name) for match in _VARIABLE.findall(text)}


def substitute(expr: str, values: Mapping[str, str] = VARIABLE_VALUES) -> str:
    """``expr`` with each variable replaced by its value in ``values``."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise ValueError(
                f"no value for variable ${name} in {expr!r}; "
                f"known: {', '.join(sorted(values))}"
            )
        return values[name]

    return _VARIABLE.sub(value, expr)


def dashboard_queries(
    path: Path | str = DASHBOARD, *, values: Mapping[str, str] | None = None
) -> list[str]:
    """Every panel target's expression, in panel order, variables substituted.

    ``values`` overrides some of ``VARIABLE_VALUES``: ``{"model": "churn"}``
    restricts every per-model query to the model ``churn``.
    """
    merged = {**VARIABLE_VALUES, **(values or {})}
    return [
        substitute(target["expr"], merged)
        for panel in iter_panels(load_dashboard(path))
        for target in panel.get("targets", [])
    ]
