"""Every metric the alerts and the Grafana dashboard query exists in the code."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import CollectorRegistry

from pipeline.agent.metrics import AgentMetrics
from pipeline.cache.metrics import AuditMetrics, CacheMetrics
from pipeline.metrics import RuntimeMetrics
from pipeline.routing.metrics import RouterMetrics
from pipeline.settings import REPO_ROOT
from pipeline.tools.metrics import ToolMetrics

_NAME = re.compile(r"\bticketflow_[a-z_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported() -> set[str]:
    registry = CollectorRegistry()
    RuntimeMetrics(registry)
    CacheMetrics(registry)
    AuditMetrics(registry)
    RouterMetrics(registry)
    ToolMetrics(registry)
    AgentMetrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def base(name: str) -> str:
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def test_alerts_and_dashboard_query_only_metrics_that_exist() -> None:
    known = {base(n) for n in exported()}
    alerts = yaml.safe_load((REPO_ROOT / "infra/prometheus/alerts.yml").read_text())
    exprs = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((REPO_ROOT / "infra/grafana/dashboards/ticketflow-runtime.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {base(n) for expr in exprs for n in _NAME.findall(expr)}
    assert used and used <= known, used - known
