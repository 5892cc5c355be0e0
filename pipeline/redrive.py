"""Dead-letter inspection and redrive: after a fix, send dead letters back to their topic.

A redriven record is the original key and value bytes, produced again to the topic it came
from, with a ``ticketflow-redrive-of`` header naming the dead letter's source position.
Redis remembers which positions were redriven, so running redrive twice sends each dead
letter once (``force`` overrides). Should a crash fall between the send and the note, the
ticket is sent twice and intake's idempotency on ticket id answers it once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis

from pipeline.client import TicketflowClient
from pipeline.errors import TransientError
from pipeline.events import DeadLetter

REDRIVE_HEADER = "ticketflow-redrive-of"


@dataclass
class RedriveReport:
    matched: int = 0
    redriven: int = 0
    already_redriven: int = 0
    by_error_class: dict[str, int] = field(default_factory=dict)


def position(letter: DeadLetter) -> str:
    return f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"


def matching(letters: list[DeadLetter], processor: str | None, error_class: str | None) -> list[DeadLetter]:
    return [d for d in letters
            if (processor is None or d.processor == processor)
            and (error_class is None or d.error_class == error_class)]


def redrive(client: TicketflowClient, store: redis.Redis[bytes], *, processor: str | None = None,
            error_class: str | None = None, dry_run: bool = False, force: bool = False) -> RedriveReport:
    letters = matching([r.event for r in client.dead_letters(timeout_s=30)], processor, error_class)
    done_key = f"{client.settings.redis_key_prefix()}redriven"
    report = RedriveReport(matched=len(letters),
                           by_error_class=dict(Counter(d.error_class for d in letters)))
    try:
        for letter in letters:
            where = position(letter)
            if not force and store.sismember(done_key, where):
                report.already_redriven += 1
                continue
            if dry_run:
                continue
            client.send_raw(letter.source_topic, letter.key, letter.value or b"",
                            headers={REDRIVE_HEADER: where.encode()})
            client.flush()
            store.sadd(done_key, where)
            report.redriven += 1
    except redis.RedisError as exc:
        raise TransientError(f"redis unavailable for redrive bookkeeping: {exc}", "redis") from exc
    return report
