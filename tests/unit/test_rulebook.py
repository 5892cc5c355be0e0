"""The rule book: the shipped banking77 rules load; mistakes are caught at start-up with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.adapters.sql_bank import SqlBank
from pipeline.errors import ConfigurationError
from pipeline.routing.factory import BANKING77_RULES
from pipeline.routing.rulebook import RuleBook, placeholders
from pipeline.settings import REPO_ROOT
from pipeline.tools.banking import banking_tools
from pipeline.tools.registry import ToolRegistry

CATEGORIES = REPO_ROOT.parent / "shared" / "datasets" / "banking77" / "categories.json"


@pytest.fixture(scope="module")
def tools() -> ToolRegistry:
    return banking_tools(SqlBank("sqlite://"))


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules:\n" + body)
    return path


def test_shipped_rules_cover_every_banking77_intent(tools: ToolRegistry) -> None:
    book = RuleBook.load(BANKING77_RULES, tools)
    from pipeline.datasets import banking77

    assert book.intents() == {row.label for row in banking77()}
    if CATEGORIES.exists():  # the shared copy of the dataset, when this checkout sits beside it
        assert book.intents() == set(json.loads(CATEGORIES.read_text()))
    assert book.rules[-1].intent is None and book.rules[-1].action == "agent"  # the fallback comes last
    # a refund is never among the tools of any route: refunds are a person's decision here
    assert all("refund" not in rule.allowed_tools for rule in book.rules)


def test_first_matching_rule_wins_and_entities_are_conditions(tools: ToolRegistry) -> None:
    book = RuleBook.load(BANKING77_RULES, tools)
    with_customer = book.match("card_arrival", {"customer_id": "C-00001", "intent": "card_arrival"})
    without = book.match("card_arrival", {"intent": "card_arrival"})
    assert with_customer is not None and with_customer.action == "tool" and with_customer.tool == "card_status"
    assert without is not None and without.action == "template" and without.generic
    fallback = book.match(None, {})
    assert fallback is not None and fallback.name == "fallback_agent"
    assert book.allowed_tools("lost_or_stolen_card") == frozenset({"card_status", "freeze_card"})
    assert book.allowed_tools("card_arrival") == frozenset()
    assert book.allowed_tools("no_such_route") is None


@pytest.mark.parametrize(("body", "expected"), [
    ("  - {name: a, when: {intent: x}, action: tool, tool: teleport, template: hi}\n",
     "rules.yaml:3: rule a: tool: no tool named 'teleport'"),
    ("  - {name: a, when: {intent: x}, action: template, template: 'Card {card_last4}'}\n",
     "rules.yaml:3: rule a: template: {card_last4} is not available here"),
    ("  - name: a\n    when: {intent: x, entities: [customer_id]}\n    action: tool\n    tool: card_status\n"
     "    arguments: {customer_id: '{customer_id}', pin: '1234'}\n    template: 'ok'\n",
     "rules.yaml:3: rule a: arguments: card_status takes no argument 'pin'"),
    ("  - {name: a, when: {intent: x}, action: tool, tool: card_status, template: ok}\n",
     "card_status needs argument 'customer_id'"),
    ("  - {name: a, when: {intent: x}, action: template, template: '{intent.__class__}'}\n",
     "must be a plain name"),
    ("  - {name: a, when: {intent: x}, action: agent, lane: interactive, tier: cheap, budget: b, "
     "tools: [card_status, launch_missiles]}\n", "tools: no tool named 'launch_missiles'"),
])
def test_mistakes_name_file_line_and_reason(tmp_path: Path, tools: ToolRegistry, body: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RuleBook.load(write(tmp_path, body), tools)
    assert expected in str(caught.value)


def test_tool_template_may_use_the_tools_result_fields(tmp_path: Path, tools: ToolRegistry) -> None:
    path = write(tmp_path, "  - name: a\n    when: {intent: card_arrival, entities: [customer_id]}\n"
                 "    action: tool\n    tool: card_status\n    arguments: {customer_id: '{customer_id}'}\n"
                 "    template: 'Card {card_last4} is {status} ({intent})'\n")
    [rule] = RuleBook.load(path, tools).rules
    assert rule.line == 3 and not rule.generic


def test_placeholders() -> None:
    assert placeholders("a {b} c {d}") == ["b", "d"]
    with pytest.raises(ValueError):
        placeholders("{b!r}")
