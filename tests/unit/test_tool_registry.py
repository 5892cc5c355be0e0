"""The typed tool registry: schema validation with clear reasons, side-effect rules."""

from __future__ import annotations

import pytest

from pipeline.tools.registry import ToolArgumentError, ToolRegistry, ToolSpec, UnknownTool, arguments_digest

CARD_STATUS = ToolSpec("card_status", "delivery status of a customer's card", {
    "type": "object", "additionalProperties": False, "required": ["customer_id"],
    "properties": {"customer_id": {"type": "string", "pattern": "^c-[0-9]{1,9}$"},
                   "last4": {"type": "string", "pattern": "^[0-9]{4}$"}},
}, data_source="cards")
REFUND = ToolSpec("refund", "refund a card payment", {
    "type": "object", "additionalProperties": False, "required": ["transfer_id", "amount_cents"],
    "properties": {"transfer_id": {"type": "string"}, "amount_cents": {"type": "integer", "minimum": 1,
                                                                       "maximum": 50_000}},
}, deterministic=False, side_effecting=True)


@pytest.fixture
def registry() -> ToolRegistry:
    made = ToolRegistry()
    made.register(CARD_STATUS, lambda ctx, args: {"status": "shipped"})
    made.register(REFUND, lambda ctx, args: {"refunded": True})
    return made


def test_valid_arguments_pass(registry: ToolRegistry) -> None:
    assert registry.validate("card_status", {"customer_id": "c-42", "last4": "4242"}) == {
        "customer_id": "c-42", "last4": "4242"}


def test_every_problem_is_named(registry: ToolRegistry) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        registry.validate("card_status", {"customer_id": "x", "last4": "12", "admin": True})
    message = str(caught.value)
    assert "customer_id: 'x' does not match" in message and "last4: '12' does not match" in message
    assert "Additional properties are not allowed ('admin' was unexpected)" in message


def test_side_effecting_tools_need_an_idempotency_key_and_valid_amounts(registry: ToolRegistry) -> None:
    with pytest.raises(ToolArgumentError, match="needs an idempotency key"):
        registry.validate("refund", {"transfer_id": "TR-1", "amount_cents": 500})
    with pytest.raises(ToolArgumentError, match="amount_cents: 500000 is greater than the maximum"):
        registry.validate("refund", {"transfer_id": "TR-1", "amount_cents": 500_000}, idempotency_key="k")
    assert registry.validate("refund", {"transfer_id": "TR-1", "amount_cents": 500}, idempotency_key="k")


def test_a_side_effecting_tool_cannot_be_declared_cacheable() -> None:
    with pytest.raises(ValueError, match="cannot be cached"):
        ToolSpec("freeze", "freeze a card", {"type": "object"}, side_effecting=True)


def test_unknown_tools_and_non_objects(registry: ToolRegistry) -> None:
    with pytest.raises(UnknownTool, match="known: card_status, refund"):
        registry.validate("transfer_money", {})
    with pytest.raises(ToolArgumentError, match="must be a JSON object"):
        registry.validate("card_status", ["c-1"])


def test_argument_digest_ignores_key_order() -> None:
    assert arguments_digest({"a": 1, "b": "x"}) == arguments_digest({"b": "x", "a": 1})
    assert arguments_digest({"a": 1}) != arguments_digest({"a": 2})
