"""The live audit of the semantic cache: how precise are the hits, measured while serving.

Nobody has labels in production, so a point estimate from a calibration split drifts unseen.
A share of each tenant's hits (``TICKETFLOW_CACHE_AUDIT_SHARE``, default 5 %; up to four
times that while the tenant's interval is wider than ``TICKETFLOW_CACHE_AUDIT_MAX_WIDTH``)
is answered a second time on the batch lane by the path the cache skipped (the router's
rule, or the agent on its strongest model), without touching the customer's answer. The two
resolution keys are compared; the tenant's running precision gets a Wilson 95 % interval.
When the interval's upper bound falls below the tenant's target, the tenant's hit policy is
tightened one level (recorded in Redis, reversible with ``ticketflow cache policy --reset``).

An audit ticket carries an :class:`AuditTag` as its replay tag, so that its answer goes to
``tickets.replay.responses`` (never to the customer's ``tickets.responses``) and names the
key and the entry it checks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

AUDIT_PREFIX = "cache-audit|"
AUDIT_SUFFIX = "#audit"
AUDIT_WORKFLOW = "cache-audit"
#: Audits before a tightening may follow the last one (one bad streak is not three levels).
TIGHTEN_EVERY = 10
#: Audited hits below which no interval is acted on (Wilson is honest, but 3 audits prove little).
MIN_AUDITS = 10
Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class AuditTag:
    """What an audit ticket checks: the key the cache served, from which entry, for which ticket."""

    served_key: str
    entry_id: str
    ticket_id: str

    def render(self) -> str:
        return f"{AUDIT_PREFIX}{self.served_key}|{self.ticket_id}|{self.entry_id}"

    @classmethod
    def parse(cls, tag: str | None) -> AuditTag | None:
        if not tag or not tag.startswith(AUDIT_PREFIX):
            return None
        parts = tag[len(AUDIT_PREFIX):].split("|", 2)
        if len(parts) != 3:
            return None
        return cls(served_key=parts[0], ticket_id=parts[1], entry_id=parts[2])


def is_audit(replay_tag: str | None) -> bool:
    return bool(replay_tag and replay_tag.startswith(AUDIT_PREFIX))


def audit_ticket_id(ticket_id: str) -> str:
    return f"{ticket_id}{AUDIT_SUFFIX}"


def audited_ticket(ticket_id: str) -> str:
    """The customer's ticket an audit ticket id belongs to (itself when it is not an audit)."""
    return ticket_id.removesuffix(AUDIT_SUFFIX)


def wilson(agreed: int, audited: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) without data."""
    if audited <= 0:
        return 0.0, 1.0
    p = agreed / audited
    denominator = 1 + z * z / audited
    centre = (p + z * z / (2 * audited)) / denominator
    half = z * math.sqrt(p * (1 - p) / audited + z * z / (4 * audited * audited)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def audit_share(base: float, agreed: int, audited: int, max_width: float) -> float:
    """The share of a tenant's hits to audit: the base share, up to four times it while the
    tenant's interval is wider than ``max_width`` (an uncertain estimate learns faster)."""
    low, high = wilson(agreed, audited)
    if base <= 0:
        return 0.0
    return min(1.0, base * 4) if high - low > max_width else base


def sampled(ticket_id: str, share: float) -> bool:
    """Deterministic: the same ticket is picked (or not) on every replay of it."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"audit\x00{ticket_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True, slots=True)
class AuditState:
    """A tenant's running audit: counts, and the policy level they led to."""

    audited: int = 0
    agreed: int = 0
    level: int = 0
    tightened_at: int = 0  # ``audited`` when the level last rose

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agreed, self.audited)

    @property
    def estimate(self) -> float:
        return self.agreed / self.audited if self.audited else 1.0

    def should_tighten(self, target: float, max_level: int) -> bool:
        """The upper bound is below the target: the cache is worse than promised, with 95 % confidence."""
        return (self.audited >= MIN_AUDITS and self.interval[1] < target and self.level < max_level
                and self.audited - self.tightened_at >= TIGHTEN_EVERY)
