"""Dependency faults, classified once, at the adapter boundary.

Every adapter that talks to a dependency (Redis, SQL, Qdrant, the embedder, Kafka admin) is
wrapped with :func:`adapter`, which turns its client library's exceptions into
:class:`~pipeline.errors.Transient` (may heal: connection refused or reset, timeouts,
READONLY/LOADING, failover) or :class:`~pipeline.errors.Permanent` (retrying cannot help).
LLM providers raise :class:`~pipeline.llm.types.ProviderError` themselves. Above the
adapters nobody catches a client library's exception types: the runtime's failure policy
(pipeline/runtime/failures.py) sees only these two kinds.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.errors import Permanent, TicketflowError, Transient

T = TypeVar("T")

_TRANSIENT_REDIS_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY")


def classify(exc: BaseException, dependency: str) -> TicketflowError:
    """``exc`` (raised by ``dependency``'s client) as Transient or Permanent."""
    if isinstance(exc, TicketflowError):
        return exc
    message = f"{dependency}: {type(exc).__name__}: {exc}"
    if _transient(exc):
        return Transient(message, dependency)
    return Permanent(message)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)):
        return True
    module = type(exc).__module__
    if module.startswith("redis"):
        import redis.exceptions as rex

        if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):  # LOADING, MASTERDOWN included
            return True
        return isinstance(exc, rex.ResponseError) and str(exc).split(" ", 1)[0] in _TRANSIENT_REDIS_REPLIES
    if module.startswith("psycopg"):
        import psycopg

        # OperationalError: the server went away, refused, is shutting down; not a SQL mistake
        return isinstance(exc, psycopg.OperationalError)
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    if module.startswith("qdrant_client"):
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(exc, UnexpectedResponse):
            status = exc.status_code or 0
            return status >= 500 or status == 429
        return isinstance(exc, ResponseHandlingException)  # connection refused, timeouts
    if module.startswith(("httpx", "httpcore")):
        return True  # transport errors of qdrant-client's HTTP transport
    if module.startswith("cimpl") or module.startswith("confluent_kafka"):
        error = exc.args[0] if exc.args else None
        return bool(getattr(error, "retriable", lambda: False)())
    return False


def _wrap(function: Callable[..., Any], dependency: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            except TicketflowError:
                raise
            except Exception as exc:
                raise classify(exc, dependency) from exc
        return wrapped_async

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except TicketflowError:
            raise
        except Exception as exc:
            raise classify(exc, dependency) from exc
    return wrapped


def adapter(dependency: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: every public method of the adapter raises only ticketflow errors,
    its client's exceptions classified as Transient or Permanent for ``dependency``."""
    def decorate(cls: type[T]) -> type[T]:
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            setattr(cls, name, _wrap(member, dependency))
        return cls
    return decorate
