"""The project's one exception hierarchy.

Third-party errors are wrapped with ``raise ... from exc``. Every error says whether
retrying the same work may succeed (``retryable``): the runtime retries transient
errors with backoff and dead-letters permanent ones.
"""

from __future__ import annotations


class TicketflowError(Exception):
    """Base of every error raised by ticketflow."""

    retryable: bool = False


class ConfigurationError(TicketflowError):
    """Settings are missing or inconsistent; fix the configuration and restart."""


class ServiceError(TicketflowError):
    """A local service (Kafka, Redis) could not be started, stopped or reached."""


class TransientError(TicketflowError):
    """A dependency failed in a way that may heal (timeouts, connection resets, a replica
    loading, a failover). Never a dead letter while the dependency is down: the runtime
    pauses and waits for it (pipeline/runtime/failures.py). ``dependency`` names it (``redis``,
    ``sql``, ``qdrant``, ``llm``, ``kafka``) for the runtime's health probe and metrics."""

    retryable = True

    def __init__(self, message: str, dependency: str | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency


class PermanentError(TicketflowError):
    """A dependency refused the work in a way retrying cannot fix (a bad command, a
    constraint): the record is dead-lettered with the reason."""


# The names the architecture uses for the two kinds of dependency fault.
Transient = TransientError
Permanent = PermanentError


class DecodeError(TicketflowError):
    """A record's bytes are not a valid event of the expected schema."""


class ValidationFailure(TicketflowError):
    """A decoded event breaks a business rule (size limit, empty field, bad id)."""


class SchemaError(TicketflowError):
    """A schema file is invalid or a schema change breaks compatibility."""
