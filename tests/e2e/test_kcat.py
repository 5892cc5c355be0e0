"""kcat, a Kafka client nobody here wrote, as a user without Avro tooling would use it: JSON
tickets produced with ``kcat -P``, the answers read as JSON from ``tickets.responses.json``
with ``kcat -C`` (the opt-in ``egress-json`` processor, TICKETFLOW_JSON_EGRESS=true), and a
broken line dead-lettered with a clear error, never lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample
from pipeline.settings import Settings
from tests.helpers import WorkerProcess

pytestmark = pytest.mark.integration


def kcat(settings: Settings, *args: str, stdin: str | None = None) -> str:
    tool = shutil.which("kcat")
    assert tool is not None, "kcat is missing: `./run test` installs Debian's kcat package"
    done = subprocess.run([tool, "-b", settings.bootstrap_servers(), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kcat_produces_json_tickets_and_reads_json_answers(settings: Settings, tmp_path: Path) -> None:
    tag = f"kc{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    tickets = {f"{tag}-{i}": q.text for i, q in enumerate(banking77_sample(20, seed=4))}
    lines = [f"{tid}|" + json.dumps({"ticket_id": tid, "tenant_id": "acme", "body": body, "created_at": now})
             for tid, body in tickets.items()]
    lines.append(f"{tag}-broken|" + '{"ticket_id": "' + tag + '-broken", "tenant_id": "acme"}')  # no body
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_JSON_EGRESS": "true"}
    worker.start()
    try:
        kcat(settings, "-P", "-t", f"{settings.topic_prefix}tickets.ingress", "-K", "|", stdin="\n".join(lines) + "\n")
        answers: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 180
        while len(answers) < len(tickets) and time.monotonic() < deadline:
            out = kcat(settings, "-C", "-t", f"{settings.topic_prefix}tickets.responses.json", "-o", "beginning",
                       "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%k\t%s\n")
            for line in out.splitlines():
                key, _, value = line.partition("\t")
                answer = json.loads(value)
                assert answer["ticket_id"] == key
                answers[key] = answer
            time.sleep(1)
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert set(answers) == set(tickets)
    for answer in answers.values():
        assert answer["tenant_id"] == "acme"
        assert answer["path"] in {"cache", "rule", "tool", "agent", "escalated"}
        assert isinstance(answer["answer"], str) and answer["answer"]
    letters = [d.event for d in TicketflowClient(settings).dead_letters(timeout_s=30)]
    broken = [d for d in letters if d.key == f"{tag}-broken".encode()]
    assert len(broken) == 1 and "body" in broken[0].error_message, [d.error_message for d in letters]
