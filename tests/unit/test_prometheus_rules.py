"""The shipped Prometheus configuration and alert rules, checked by Prometheus' own promtool
(Debian's `prometheus` package; `./run test` installs it when missing): the rules and the
config load, and every alert has a unit test where it fires and one where it stays quiet."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from pipeline.settings import REPO_ROOT

PROMETHEUS = REPO_ROOT / "infra" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool is missing: `./run test` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_and_the_config_load() -> None:
    rules = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_and_stays_quiet_in_promtools_unit_tests() -> None:
    tests = PROMETHEUS / "tests" / "alerts_test.yml"
    shipped = tests.read_text()
    generated = subprocess.run([sys.executable, str(PROMETHEUS / "tests" / "make_alert_tests.py")],
                               capture_output=True, text=True, check=False)
    assert generated.returncode == 0, generated.stderr  # every alert has a case (it asserts so)
    assert tests.read_text() == shipped, "alerts_test.yml is stale: run make_alert_tests.py and commit it"
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
              for r in g["rules"]}
    cases = yaml.safe_load(shipped)["tests"]
    assert {c["name"] for c in cases} == {f"{a} fires" for a in alerts} | {f"{a} stays quiet" for a in alerts}
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
