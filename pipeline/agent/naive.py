"""What the same tickets would cost through a naive agent loop: every ticket, the strong
model, the agent's usual steps (a lookup of the customer's data when the question is about
it, then the answer), no cache and no rules. The naive agent understands each ticket as
what it turned out to be (the intent the pipeline resolved it with), gets the prompt cache
on its static prefix (system prompt listing every key, the same tool views as the agent)
billed at the cached-input price whatever its length (the demo's provider for it has no
1,024-token minimum), so it is never dearer for missing the cache.
Computed with the simulated provider's token, latency and price models, without running
anything, so that the demo reports ``naive_cost_usd`` and ``naive_latency_ms`` beside what
the pipeline spent and took. The naive loop's time is its calls one after another (each the
strong model's time to first token, then its output tokens) plus ``TOOL_MS`` per lookup.
"""

from __future__ import annotations

import json

from pipeline.agent.prompt import build_request, system_prompt, tool_definitions
from pipeline.agent.runner import naive_step
from pipeline.events import AgentStep, Message, TicketSubmitted
from pipeline.llm.pricing import PricingTable
from pipeline.llm.simulated import SimulatedProvider
from pipeline.tools.registry import ToolRegistry

LOOKUPS = ("card_status", "top_up_status", "transfer_status")
TOOL_MS = 20.0  # a lookup in the tools' database and back (the tool runner's p50 here: a few ms)
# What a lookup returns, for the size of the second step's prompt (a card_status result).
TYPICAL_RESULT = json.dumps({"card_last4": "4242", "kind": "physical", "status": "dispatched",
                             "ordered_on": "2026-11-02", "dispatched_on": "2026-11-03",
                             "expected_by": "2026-11-10", "expires_on": "2029-08-31"})


class NaiveLoop:
    def __init__(self, provider: SimulatedProvider, pricing: PricingTable, tools: ToolRegistry, intents: list[str],
                 strong_model: str) -> None:
        self.provider = provider
        self.pricing = pricing
        self.tools = tool_definitions([tools.spec(name) for name in LOOKUPS])
        self.system = system_prompt(intents)
        self.model = strong_model

    def cost_micros(self, ticket: TicketSubmitted, intent: str | None) -> int:
        return self.run(ticket, intent)[0]

    def run(self, ticket: TicketSubmitted, intent: str | None) -> tuple[int, float]:
        """What the naive loop pays for the ticket (micro-dollars) and how long it takes (ms)."""
        # What the model knows: the ticket's nearest intent and whether the customer is known
        # (typed facts, rendered into the prompt by build_request, as for the agent).
        step = AgentStep(step_id=f"naive:{ticket.ticket_id}:0", ticket_id=ticket.ticket_id, tenant_id=ticket.tenant_id,
                         workflow="naive", step=0, ticket=b"", transcript=[Message("user", ticket.body)],
                         model_tier="strong", allowed_tools=list(LOOKUPS), candidates=[intent] if intent else [],
                         signed_in=ticket.customer_id is not None, tool_call_cap=len(LOOKUPS))
        total, elapsed = 0, 0.0
        for index in range(2):
            request = build_request(step, self.model, self.system, self.tools, f"{step.step_id}:{index}", 400)
            cost, latency = naive_step(self.provider, self.pricing, request)
            total += cost
            elapsed += latency
            self.provider.remember_prefix(request)
            _, calls, _ = self.provider.decide(request)
            if not calls:
                break
            call = calls[0]
            elapsed += TOOL_MS
            step = AgentStep(**{**{f: getattr(step, f) for f in step.__slots__}, "transcript": [
                *step.transcript, Message("assistant", "", call.call_id, call.name, call.arguments),
                Message("tool", TYPICAL_RESULT, call.call_id, call.name)]})
        return total, elapsed
