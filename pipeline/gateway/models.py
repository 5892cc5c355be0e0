"""The gateway's request and response bodies, and its JSON errors (``{"error": {"code",
"message", "field"}}``): what the OpenAPI document describes."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from processors.intake import MAX_METADATA_ENTRIES

log = logging.getLogger(__name__)


class TicketIn(BaseModel):
    """A ticket as an app posts it. The tenant is never part of it: it comes from the key."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$",
                                  description="your id (default: generated); a ticket id is answered once")
    customer_id: str | None = Field(default=None, max_length=128)
    subject: str | None = Field(default=None, max_length=256)
    # at least one character that is neither a space nor a control character: intake's
    # normalisation leaves nothing of anything else (and would dead-letter it)
    body: str = Field(min_length=1, max_length=65536, pattern=r"[^\s\x00-\x1f\x7f]",
                      description="the customer's message; at most TICKETFLOW_MAX_BODY_BYTES bytes of UTF-8 "
                                  "(64 KiB by default)")
    lane: Literal["interactive", "batch"] = "interactive"
    metadata: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=MAX_METADATA_ENTRIES, description="string values, at most 32 entries")


class Accepted(BaseModel):
    ticket_id: str
    status: Literal["pending"]
    location: str


class Resolved(BaseModel):
    ticket_id: str
    status: Literal["resolved"]
    path: str
    answer: str
    resolution_key: str | None = None
    escalation_reason: str | None = None
    created_at: int
    resolved_at: int
    cost_usd: float
    end_to_end_ms: float


class Problem(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: Problem


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    kafka: bool
    redis: bool
    fanout: bool


def error(status: int, code: str, message: str, field: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=headers)


class Rejected(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no API key, or not a valid one"},
    413: {"model": ErrorBody, "description": "the request is over the size limit"},
    422: {"model": ErrorBody, "description": "invalid input; `field` names the part at fault"},
    429: {"model": ErrorBody, "description": "over the tenant's request rate; see Retry-After"},
    503: {"model": ErrorBody, "description": "Kafka or Redis unreachable; try again after Retry-After"},
}


def unavailable(dependency: str, exc: BaseException) -> JSONResponse:
    log.warning("gateway: %s unavailable: %s", dependency, exc)
    return error(503, "unavailable", f"{dependency} is unreachable; try again", None, {"Retry-After": "1"})
