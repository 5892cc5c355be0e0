from __future__ import annotations

import io

import pytest

from pipeline.errors import ValidationFailure
from pipeline.ticket_files import read_tickets


def test_csv_with_optional_columns_and_metadata() -> None:
    data = "text,tenant_id,ticket_id,label,lane\nWhere is my card?,acme,t1,card_arrival,batch\nHi,,,,\n"
    first, second = read_tickets(io.StringIO(data))
    assert (first.ticket_id, first.tenant_id, first.lane) == ("t1", "acme", "batch")
    assert first.metadata == {"label": "card_arrival"}
    assert second.tenant_id == "default" and second.ticket_id.startswith("t-") and second.lane == "interactive"


def test_jsonl_and_lane_override() -> None:
    data = '{"ticket_id": "j1", "tenant_id": "a", "text": "hello", "metadata": {"k": "v"}}\n\n{"body": "x"}\n'
    first, second = read_tickets(io.StringIO(data), lane="batch")
    assert (first.ticket_id, first.body, first.metadata, first.lane) == ("j1", "hello", {"k": "v"}, "batch")
    assert second.body == "x"


@pytest.mark.parametrize(("data", "reason"), [
    ("body_text\nx\n", "needs a header with a 'text' column"),
    ('{"text": "a"}\n{oops\n', "line 2: invalid JSON"),
    ("text,lane\nhi,fast\n", "line 2: lane must be one of"),
    ("text,priority\nhi,high\n", "line 2: priority must be an integer"),
])
def test_bad_files_say_where(data: str, reason: str) -> None:
    with pytest.raises(ValidationFailure, match=reason):
        list(read_tickets(io.StringIO(data)))
