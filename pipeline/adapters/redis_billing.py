"""The simulated provider's own count of the calls it served (and would bill), in Redis, so
that every worker's provider adds to one count the demo compares with the pipeline's."""

from __future__ import annotations

import redis


class RedisBilling:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str) -> None:
        self.client = client
        self.key = f"{key_prefix}sim:billed"

    def add(self, model: str) -> None:
        self.client.hincrby(self.key, model, 1)

    def by_model(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.key).items()}

    def total(self) -> int:
        return sum(self.by_model().values())

    def reset(self) -> None:
        self.client.delete(self.key)
