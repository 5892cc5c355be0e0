"""The simulated provider's own count of the calls it served (and would bill), in Redis, so
that every worker's provider adds to one count the demo compares with the pipeline's.

Beside the count per model it keeps one per request id (step id, tier and attempt) and an
invoice line per served call, so that a test can name a call billed twice. Each served call
is booked under a token of its own, once: a booking re-sent because its reply was lost (the
connection dropped after Redis applied it) is not a second call, while the same request
served twice has two tokens and is counted twice.

It is also the provider's store of the replies it served (as OpenAI keeps completions made
with ``store=true``), written in the same script as the booking: a reply billed is a reply
stored, so a worker killed after the provider served a call and before it recorded the reply
finds it again (:meth:`stored`) instead of buying it twice."""

from __future__ import annotations

import os
import time
import uuid

import redis

_BOOK = """
if redis.call('SADD', KEYS[4], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
  if ARGV[2] ~= '' then
    redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
    redis.call('RPUSH', KEYS[3], ARGV[4])
  end
  if ARGV[5] ~= '' then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[6]) end
end
return 1
"""


class RedisBilling:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.key = f"{key_prefix}sim:billed"
        self.calls_key = f"{key_prefix}sim:billed:calls"
        self.lines_key = f"{key_prefix}sim:billed:lines"
        self.tokens_key = f"{key_prefix}sim:billed:tokens"
        self.stored_prefix = f"{key_prefix}sim:stored:"
        self.ttl_s = ttl_s
        self._book = client.register_script(_BOOK)
        self._pending: list[tuple[str, str, str, str]] = []  # model, request id, invoice line, reply

    def add(self, model: str, request_id: str = "", reply: str = "") -> None:
        """Book one served call, and keep its ``reply`` (JSON) under its request id. The
        provider's books do not go down with our Redis: while it is unreachable the bookings
        wait in memory and go out with the next call's."""
        token = uuid.uuid4().hex
        line = f"{request_id} pid={os.getpid()} served={time.time():.3f} token={token}"
        self._pending.append((model, request_id, line, reply if request_id else ""))
        # One EVALSHA each (the script loads itself on NOSCRIPT). A pipeline with a script in it
        # asks SCRIPT EXISTS first on every execute: a second round trip on the agent's event
        # loop for every call (a quarter of that loop's time at 100 tickets/s).
        while self._pending:
            pending_model, pending_id, pending_line, pending_reply = self._pending[0]
            try:
                self._book(keys=[self.key, self.calls_key, self.lines_key, self.tokens_key,
                                 self.stored_prefix + pending_id],
                           args=[pending_model, pending_id, pending_line.rsplit("token=", 1)[1], pending_line,
                                 pending_reply, self.ttl_s])
            except (redis.ConnectionError, redis.TimeoutError):
                return
            self._pending.pop(0)

    def stored(self, request_id: str) -> str | None:
        """The reply served to ``request_id`` (JSON), if one was; raises the client's
        ConnectionError while Redis is unreachable (the caller waits)."""
        raw = self.client.get(self.stored_prefix + request_id)
        return raw.decode() if raw is not None else None

    def calls(self) -> dict[str, int]:
        """Times billed, per request id."""
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.calls_key).items()}

    def by_model(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.key).items()}

    def total(self) -> int:
        return sum(self.by_model().values())

    def reset(self) -> None:
        self.client.delete(self.key, self.calls_key, self.lines_key, self.tokens_key)

    def lines(self, request_id: str) -> list[str]:
        """The invoice lines of one request id (one per time it was billed)."""
        return [line.decode() for line in self.client.lrange(self.lines_key, 0, -1)
                if line.decode().split(" ", 1)[0] == request_id]
