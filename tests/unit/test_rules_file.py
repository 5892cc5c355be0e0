"""The rules file is checked at start-up: errors name the file, the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigurationError
from pipeline.routing.rules_file import load_rules

GOOD = """\
version: 1
rules:
  - name: exchange_rate_policy
    when: {intent: exchange_rate}
    action: template
    template: "We use the interbank rate plus a 0.5 % fee."
  - name: card_status
    when:
      intent: card_arrival
      entities: [card_last4]
    action: tool
    tool: card_status
    arguments: {last4: "{card_last4}"}
    template: "Your card ending {card_last4} is {status}."
  - name: everything_else
    when: {}
    action: agent
    lane: interactive
    tier: cheap
    budget: standard
    tools: [card_status]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_a_valid_file_loads(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, GOOD))["rules"]
    assert [r["name"] for r in rules] == ["exchange_rate_policy", "card_status", "everything_else"]


@pytest.mark.parametrize(("change", "expected"), [
    (("action: template\n", "action: email\n"),
     "rules.yaml:5: rules/0/action: 'email' is not one of ['template', 'tool', 'agent']"),
    (('    tool: card_status\n', ''), "rules.yaml:7: rules/1: 'tool' is a required property"),
    (("entities: [card_last4]", "entities: [iban]"), "rules.yaml:10: rules/1/when/entities/0: 'iban' is not one of"),
    (("    tier: cheap\n", "    tier: cheap\n    tokens: 5\n"),
     "rules.yaml:15: rules/2: Additional properties are not allowed ('tokens' was unexpected)"),
    (("name: everything_else", "name: card_status"), "rules.yaml:15: rule name 'card_status' is used twice"),
    (("version: 1", "version: 2"), "rules.yaml:1: version: 1 was expected"),
    (("    when: {intent: exchange_rate}\n", "    when: {intent: exchange_rate\n"), "rules.yaml:5: not valid YAML"),
])
def test_errors_name_file_line_and_reason(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_rules(write(tmp_path, GOOD.replace(*change)))
    assert expected in str(caught.value), str(caught.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read rules file"):
        load_rules(tmp_path / "nope.yaml")
    with pytest.raises(ConfigurationError, match=r"rules\.yaml:1: the rules file is empty"):
        load_rules(write(tmp_path, ""))
