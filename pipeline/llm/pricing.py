"""Prices per model (USD per million tokens: input, cached input, output) and exact costs.

Costs are integer micro-dollars, computed with Decimal and rounded half up once per call,
so that sums over tickets, tenants and days are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigurationError

MILLION = Decimal(1_000_000)
#: A call through the provider's Batch API costs this share of the list price (OpenAI: half).
BATCH_FACTOR = Decimal("0.5")


@dataclass(frozen=True)
class Price:
    input: Decimal  # USD per 1M input tokens
    cached_input: Decimal
    output: Decimal

    def cost_micros(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0, factor: Decimal = Decimal(1)) -> int:
        """Micro-dollars for one call; ``tokens_cached`` is the part of ``tokens_in`` served from
        cache; ``factor`` scales the list price (a Batch API call: :data:`BATCH_FACTOR`)."""
        fresh = max(0, tokens_in - tokens_cached)
        usd = (fresh * self.input + tokens_cached * self.cached_input + tokens_out * self.output) * factor / MILLION
        return int((usd * MILLION).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# List prices of a current strong/cheap pair (OpenAI, per 1M tokens; see the README). Any
# model the provider serves can be priced in TICKETFLOW_PRICING_FILE.
DEFAULT_PRICES: dict[str, dict[str, str]] = {
    "gpt-4.1": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
    "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
    "gpt-4.1-nano": {"input": "0.10", "cached_input": "0.025", "output": "0.40"},
}


class PricingTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = prices

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> PricingTable:
        prices = {}
        for model, fields in raw.items():
            try:
                prices[model] = Price(Decimal(str(fields["input"])), Decimal(str(fields["cached_input"])),
                                      Decimal(str(fields["output"])))
            except (KeyError, ArithmeticError, TypeError) as exc:
                raise ConfigurationError(f"pricing for {model!r} needs input, cached_input and output "
                                         f"(USD per 1M tokens): {exc}") from exc
        return cls(prices)

    @classmethod
    def load(cls, path: Path | None) -> PricingTable:
        if path is None:
            return cls.from_mapping(DEFAULT_PRICES)
        try:
            return cls.from_mapping({**DEFAULT_PRICES, **json.loads(path.read_text())})
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read pricing file {path}: {exc}") from exc

    def price(self, model: str) -> Price:
        try:
            return self.prices[model]
        except KeyError:
            raise ConfigurationError(f"no price for model {model!r}; known: {', '.join(sorted(self.prices))}. "
                                     "Add it to TICKETFLOW_PRICING_FILE.") from None

    def cost_micros(self, model: str, tokens_in: int, tokens_out: int, tokens_cached: int = 0,
                    batch: bool = False) -> int:
        """A call's cost; ``batch``: served through the provider's Batch API, at its price."""
        return self.price(model).cost_micros(tokens_in, tokens_out, tokens_cached,
                                             BATCH_FACTOR if batch else Decimal(1))
