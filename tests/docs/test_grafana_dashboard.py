"""The Grafana dashboard in docs/grafana/ queries exactly the metrics the collector exposes:
every metric name in every query (panels and template variables) is one of
``metrics.METRIC_NAMES`` (a histogram's ``_bucket``/``_sum``/``_count`` series included),
and every exposed metric is shown by some panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from celery_supervise.metrics import METRIC_NAMES

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "celery_supervise.json"
HISTOGRAMS = {"celery_supervise_step_seconds", "celery_supervise_tick_seconds"}


def _queries(node: Any) -> list[str]:
    """Every PromQL string: panel targets' ``expr`` and template variables' queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            elif key == "query" and isinstance(value, dict | str):
                found += [value] if isinstance(value, str) else _queries(value)
            else:
                found += _queries(value)
    elif isinstance(node, list):
        for item in node:
            found += _queries(item)
    return found


def _series(name: str) -> str:
    """The metric family a series belongs to."""
    for family in HISTOGRAMS:
        if name in (family, f"{family}_bucket", f"{family}_sum", f"{family}_count"):
            return family
    return name


def test_every_query_names_an_exposed_metric_and_every_metric_is_shown() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [q for q in _queries(dashboard) if q != "prometheus"]
    assert len(queries) >= len(METRIC_NAMES)
    used: set[str] = set()
    for query in queries:
        names = set(re.findall(r"\b(celery_supervise_\w+)", query))
        assert names, f"a query names no celery_supervise metric: {query!r}"
        for name in names:
            family = _series(name)
            assert family in METRIC_NAMES, f"{name!r} in {query!r} is not an exposed metric"
            used.add(family)
    assert used == set(METRIC_NAMES), set(METRIC_NAMES) - used
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["type"] == "prometheus"
