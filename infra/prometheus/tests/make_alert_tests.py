"""Writes alerts_test.yml: a promtool unit test for every alert in ../alerts.yml, one case where
it fires and one where it does not. The expected annotations are the rules' own templates
rendered here, so a changed summary is caught too.

    python infra/prometheus/tests/make_alert_tests.py && promtool test rules infra/prometheus/tests/alerts_test.yml
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def buckets(name: str, labels: str, low: str, high: str, slow: bool) -> list[dict[str, str]]:
    """A histogram's buckets with 10 observations a minute, all above ``low`` and at most
    ``high`` (slow) or all at most ``low`` (fast)."""
    return [{"series": f'{name}_bucket{{{labels}le="{low}"}}', "values": "0x30" if slow else "0+10x30"},
            {"series": f'{name}_bucket{{{labels}le="{high}"}}', "values": "0+10x30"},
            {"series": f'{name}_bucket{{{labels}le="+Inf"}}', "values": "0+10x30"}]


# alert -> (firing series, quiet series, eval time, labels of the firing alert, $value)
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, str]], str, dict[str, str], Any]] = {
    "TicketflowDeadLettersRising": (
        [{"series": 'ticketflow_dead_letters_total{processor="intake",error_class="InvalidTicket"}',
          "values": "0+60x30"}],
        [{"series": 'ticketflow_dead_letters_total{processor="intake",error_class="InvalidTicket"}',
          "values": "0+3x30"}],
        "20m", {"processor": "intake", "error_class": "InvalidTicket"}, None),
    "TicketflowRetriesStorm": (
        [{"series": 'ticketflow_retries_total{processor="agent"}', "values": "0+120x30"}],
        [{"series": 'ticketflow_retries_total{processor="agent"}', "values": "0+30x30"}],
        "20m", {"processor": "agent"}, None),
    "TicketflowSlowCommits": (
        buckets("ticketflow_transaction_seconds", 'processor="agent",', "0.5", "2", slow=True),
        buckets("ticketflow_transaction_seconds", 'processor="agent",', "0.5", "2", slow=False),
        "20m", {"processor": "agent"}, None),
    "TicketflowWorkerDown": (
        [{"series": 'up{job="ticketflow-workers",instance="worker-1:9100"}', "values": "0x10"}],
        [{"series": 'up{job="ticketflow-workers",instance="worker-1:9100"}', "values": "1x10"}],
        "5m", {"job": "ticketflow-workers", "instance": "worker-1:9100"}, None),
    "TicketflowDependencyDown": (
        [{"series": 'ticketflow_dependency_up{dependency="redis",processor="agent"}', "values": "0x10"}],
        [{"series": 'ticketflow_dependency_up{dependency="redis",processor="agent"}', "values": "1x10"}],
        "5m", {"dependency": "redis"}, None),
    "TicketflowStalledOnDependency": (
        [{"series": 'ticketflow_dependency_stalled_seconds{dependency="redis",processor="agent"}',
          "values": "180x5"}],
        [{"series": 'ticketflow_dependency_stalled_seconds{dependency="redis",processor="agent"}',
          "values": "30x5"}],
        "3m", {"dependency": "redis", "processor": "agent"}, None),
    "TicketflowCacheLookupSlow": (
        buckets("ticketflow_cache_lookup_seconds", '', "0.001", "0.01", slow=True),
        buckets("ticketflow_cache_lookup_seconds", '', "0.001", "0.01", slow=False),
        "20m", {}, None),
    "TicketflowCacheHitRateDropped": (  # 10-minute steps over 27 h: 0.8 yesterday, 0.2 now
        [{"series": 'ticketflow_cache_lookups_total{tenant="acme",result="hit"}',
          "values": "0+80x144 11520+20x18"},
         {"series": 'ticketflow_cache_lookups_total{tenant="acme",result="miss"}',
          "values": "0+20x144 2880+80x18"}],
        [{"series": 'ticketflow_cache_lookups_total{tenant="acme",result="hit"}', "values": "0+80x162"},
         {"series": 'ticketflow_cache_lookups_total{tenant="acme",result="miss"}', "values": "0+20x162"}],
        "27h", {"tenant": "acme"}, None),
    "TicketflowCacheAuditPrecisionBelowTarget": (
        [{"series": 'ticketflow_cache_audit_precision_high{tenant="acme"}', "values": "0.9x5"},
         {"series": 'ticketflow_cache_audit_target{tenant="acme"}', "values": "0.99x5"}],
        [{"series": 'ticketflow_cache_audit_precision_high{tenant="acme"}', "values": "0.995x5"},
         {"series": 'ticketflow_cache_audit_target{tenant="acme"}', "values": "0.99x5"}],
        "3m", {"tenant": "acme"}, 0.9),
    "TicketflowCachePolicyTightened": (
        [{"series": 'ticketflow_cache_policy_level{tenant="acme"}', "values": "2x5"}],
        [{"series": 'ticketflow_cache_policy_level{tenant="acme"}', "values": "0x5"}],
        "3m", {"tenant": "acme"}, 2),
    "TicketflowToolBreakerOpen": (
        [{"series": 'ticketflow_tool_breaker_state{tool="card_status"}', "values": "2x10"}],
        [{"series": 'ticketflow_tool_breaker_state{tool="card_status"}', "values": "1x10"}],
        "5m", {"tool": "card_status"}, None),
    "TicketflowRouterDecisionSlow": (
        buckets("ticketflow_router_decision_seconds", '', "0.001", "0.01", slow=True),
        buckets("ticketflow_router_decision_seconds", '', "0.001", "0.01", slow=False),
        "20m", {}, None),
    "TicketflowDeflectionDropped": (
        [{"series": 'ticketflow_router_decisions_total{action="template"}', "values": "0+10x150"},
         {"series": 'ticketflow_router_decisions_total{action="agent"}', "values": "0+90x150"}],
        [{"series": 'ticketflow_router_decisions_total{action="template"}', "values": "0+50x150"},
         {"series": 'ticketflow_router_decisions_total{action="agent"}', "values": "0+50x150"}],
        "2h", {}, None),
    "TicketflowLlmErrorsHigh": (
        [{"series": 'ticketflow_llm_calls_total{model="gpt-4.1-nano",outcome="ok"}', "values": "0+70x40"},
         {"series": 'ticketflow_llm_calls_total{model="gpt-4.1-nano",outcome="ProviderTimeout"}',
          "values": "0+30x40"}],
        [{"series": 'ticketflow_llm_calls_total{model="gpt-4.1-nano",outcome="ok"}', "values": "0+95x40"},
         {"series": 'ticketflow_llm_calls_total{model="gpt-4.1-nano",outcome="ProviderTimeout"}',
          "values": "0+5x40"}],
        "30m", {"model": "gpt-4.1-nano"}, None),
    "TicketflowLlmSpendSpike": (  # 5-minute steps over 51 h: ten times yesterday's rate for the last hour
        [{"series": 'ticketflow_llm_cost_micros_total{tenant="acme",model="gpt-4.1"}',
          "values": "0+100x600 60000+1000x12"}],
        [{"series": 'ticketflow_llm_cost_micros_total{tenant="acme",model="gpt-4.1"}', "values": "0+100x612"}],
        "51h", {"tenant": "acme"}, None),
    "TicketflowAgentHandoffsRising": (
        [{"series": 'ticketflow_agent_escalations_total{reason="budget"}', "values": "0+60x40"}],
        [{"series": 'ticketflow_agent_escalations_total{reason="budget"}', "values": "0+6x40"}],
        "35m", {"reason": "budget"}, None),
    "TicketflowInteractiveStepsWaiting": (
        buckets("ticketflow_agent_step_wait_seconds", 'lane="interactive",', "0.5", "2", slow=True),
        buckets("ticketflow_agent_step_wait_seconds", 'lane="interactive",', "0.5", "2", slow=False),
        "20m", {}, None),
}

INTERVALS = {"TicketflowCacheHitRateDropped": "10m", "TicketflowLlmSpendSpike": "5m"}


def humanize(value: float) -> str:
    """Prometheus' ``humanize`` for the values used here."""
    if 0 < abs(value) < 1:
        return f"{value * 1000:.4g}m"
    return f"{value:.4g}"


def render(template: str, labels: dict[str, str], value: Any) -> str:
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)
    text = re.sub(r"\{\{\s*\$value\s*\|\s*humanize\s*\}\}", lambda m: humanize(value), text)
    return re.sub(r"\{\{\s*\$value\s*\}\}", lambda m: f"{value:g}", text)


def main() -> None:
    rules = yaml.safe_load((HERE.parent / "alerts.yml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    missing = set(alerts) - set(CASES)
    assert not missing, f"alerts without a test case: {sorted(missing)}"
    tests = []
    for name, (firing, quiet, at, labels, value) in CASES.items():
        rule = alerts[name]
        interval = INTERVALS.get(name, "1m")
        expected = {"exp_labels": {**labels, **rule.get("labels", {})},
                    "exp_annotations": {k: render(v, labels, value) for k, v in rule.get("annotations", {}).items()}}
        tests.append({"name": f"{name} fires", "interval": interval, "input_series": firing,
                      "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": [expected]}]})
        tests.append({"name": f"{name} stays quiet", "interval": interval, "input_series": quiet,
                      "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": []}]})
    document = {"rule_files": ["../alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    header = "# Generated by make_alert_tests.py (edit that, then run it): promtool test rules alerts_test.yml\n"
    (HERE / "alerts_test.yml").write_text(header + yaml.safe_dump(document, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
