"""The demo bank's tools: lookups the router and the agent may call, and two side effects.

Lookups (``card_status``, ``transfer_status``, ``top_up_status``) are deterministic for a
data version and cached; ``freeze_card`` and ``refund`` change data, are never cached, run
once per idempotency key and announce the change (their ``data_source``) so that cached
lookups of that tenant are dropped.

Argument schemas are strict (patterns, bounds, no extra properties): a value lifted from a
ticket's text reaches SQL only as a bound parameter, and only after it passed them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pipeline.adapters.sql_bank import SqlBank
from pipeline.tools.registry import ToolContext, ToolRegistry, ToolSpec

CUSTOMER_ID = {"type": "string", "pattern": "^C-[0-9]{5}$"}
LAST4 = {"type": "string", "pattern": "^[0-9]{4}$"}
TRANSFER_ID = {"type": "string", "pattern": "^[A-Z0-9]{2,4}-?[A-Z0-9]{4,16}$"}
# "123.45 EUR", as the entity extractor writes amounts; refunds above 1,000.00 go to a human.
REFUND_AMOUNT = {"type": "string",
                 "pattern": "^(1000\\.00|[1-9][0-9]{0,2}\\.[0-9]{2}|0\\.[0-9][1-9]|0\\.[1-9]0) (EUR|USD|GBP)$"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


CARD_STATUS = ToolSpec("card_status", "Delivery and activation status of the customer's card (the one ending "
                       "card_last4, else the newest)", _object(["customer_id"], customer_id=CUSTOMER_ID,
                                                                card_last4=LAST4), data_source="cards",
                       timeout_s=1.0, returns=("card_last4", "kind", "status", "ordered_on", "dispatched_on",
                                               "expected_by", "expires_on"))
TRANSFER_STATUS = ToolSpec("transfer_status", "Status of the customer's transfer (transfer_id, else the latest)",
                           _object(["customer_id"], customer_id=CUSTOMER_ID, transfer_id=TRANSFER_ID),
                           data_source="transfers", timeout_s=1.0,
                           returns=("transfer_id", "amount", "recipient", "status", "reason", "created_on",
                                    "expected_by"))
TOP_UP_STATUS = ToolSpec("top_up_status", "Status of the customer's latest top-up",
                         _object(["customer_id"], customer_id=CUSTOMER_ID), data_source="top_ups", timeout_s=1.0,
                         returns=("top_up_id", "amount", "method", "status", "reason", "created_on"))
FREEZE_CARD = ToolSpec("freeze_card", "Freeze the customer's card ending card_last4 (reversible by support)",
                       _object(["customer_id", "card_last4"], customer_id=CUSTOMER_ID, card_last4=LAST4),
                       deterministic=False, side_effecting=True, data_source="cards", timeout_s=2.0,
                       returns=("card_last4", "status", "previous_status"))
REFUND = ToolSpec("refund", "Refund up to 1,000.00 of one of the customer's transfers",
                  _object(["customer_id", "transfer_id", "amount"], customer_id=CUSTOMER_ID,
                          transfer_id=TRANSFER_ID, amount=REFUND_AMOUNT),
                  deterministic=False, side_effecting=True, data_source="transfers", timeout_s=2.0,
                  returns=("refund_id", "transfer_id", "amount"))


def _cents(amount: str) -> int:
    return int(Decimal(amount.split()[0]) * 100)


def banking_tools(bank: SqlBank) -> ToolRegistry:
    """The registry of the demo bank's tools, bound to ``bank``."""

    def card_status(ctx: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
        return bank.card(ctx.tenant_id, args["customer_id"], args.get("card_last4"))

    def transfer_status(ctx: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
        return bank.transfer(ctx.tenant_id, args["customer_id"], args.get("transfer_id"))

    def top_up_status(ctx: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
        return bank.top_up(ctx.tenant_id, args["customer_id"])

    def freeze_card(ctx: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
        return bank.freeze_card(ctx.tenant_id, args["customer_id"], args["card_last4"], ctx.idempotency_key).result

    def refund(ctx: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
        return bank.refund(ctx.tenant_id, args["customer_id"], args["transfer_id"], _cents(args["amount"]),
                           ctx.idempotency_key).result

    registry = ToolRegistry()
    registry.register(CARD_STATUS, card_status)
    registry.register(TRANSFER_STATUS, transfer_status)
    registry.register(TOP_UP_STATUS, top_up_status)
    registry.register(FREEZE_CARD, freeze_card)
    registry.register(REFUND, refund)
    return registry


def tool_specs() -> ToolRegistry:
    """The registry for its specs only (checking rules, prompts, listings): no database opened."""
    return banking_tools(SqlBank("sqlite://"))
