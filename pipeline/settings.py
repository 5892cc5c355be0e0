"""Typed, frozen settings, read once at start-up in the composition root.

Every value comes from a ``TICKETFLOW_*`` environment variable or from the TOML file
named by ``TICKETFLOW_CONFIG`` (environment wins). No module reads the environment at
import time: call :func:`load_settings` in the entry point and pass the result down.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigurationError

#: Where the repository (and with it ``infra/``) lives; the package is installed editable.
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """All of ticketflow's settings. Field docs name the environment variable."""

    model_config = SettingsConfigDict(env_prefix="TICKETFLOW_", frozen=True, extra="forbid")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS: an existing cluster; when unset, "
        "the local broker that `ticketflow services up` runs is used.",
    )
    kafka_security_protocol: str = Field(default="PLAINTEXT")
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_debug: str | None = Field(
        default=None, description="TICKETFLOW_KAFKA_DEBUG: librdkafka debug contexts, e.g. 'eos,cgrp'")
    schema_registry_url: str | None = Field(
        default=None,
        description="TICKETFLOW_SCHEMA_REGISTRY_URL: Confluent framing with schema ids when set; "
        "Avro single-object encoding otherwise.",
    )
    redis_url: str | None = Field(
        default=None,
        description="TICKETFLOW_REDIS_URL: an existing Redis; when unset, the local one.",
    )
    state_dir: Path = Field(
        default=Path(".ticketflow"),
        description="TICKETFLOW_STATE_DIR: data and logs of local services, worker slot locks.",
    )
    local_kafka_port: int = 9092
    local_kafka_controller_port: int = 9093
    local_redis_port: int = 6379
    topic_prefix: str = Field(default="", description="TICKETFLOW_TOPIC_PREFIX: prepended to every topic and group.")
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    # Max time a record waits for its batch's transaction. 25 ms gave ~100 ms p99 end to end
    # over two hops at 200 tickets/s (300 ms target) while under load batches still fill to
    # max_batch; shorter intervals cost a transaction every few records (bench/pipeline_bench.py).
    commit_interval_ms: int = Field(default=25, ge=1)
    # Processors no customer waits on (accounting, the cache audit, feedback) commit at most
    # this often: every transaction costs the broker ~4 ms of CPU (README, Benchmark). The
    # cache writer is not one of them: how soon the cache learns an answer is hits.
    background_commit_interval_ms: int = Field(default=500, ge=1)
    max_batch: int = Field(default=500, ge=1)
    # A killed worker's open transaction blocks read_committed readers until it is aborted:
    # by its successor (same transactional.id) at once, or by the broker after this timeout.
    transaction_timeout_ms: int = Field(default=10_000, ge=1000)
    # 6 s is the broker's default minimum; it bounds how long a dead worker's partitions stall.
    session_timeout_ms: int = Field(default=6_000, ge=1000)
    # A batch (handle + transaction) that spends longer than this in one Kafka client call is
    # stuck there. The worker then exits with code 70 so that its supervisor restarts it; the
    # replacement fences the stuck transaction. Well above the transactional calls' timeouts
    # (the transaction timeout each).
    stuck_batch_s: float = Field(default=90.0, gt=0)
    # send_offsets_to_transaction on a thread of its own, given up 2 s past its timeout (it
    # can outlive it for a whole broker outage: librdkafka#5456; pipeline/runtime/guarded.py)
    guard_send_offsets: bool = True
    max_retries: int = Field(default=5, ge=0)
    crash_before_commit: int = Field(
        default=0, ge=0,
        description="TICKETFLOW_CRASH_BEFORE_COMMIT: fault injection for crash tests; when N > 0, the "
        "process dies (exit 137, like kill -9) at its Nth commit, after its outputs reached the broker "
        "and before the transaction commits. 0 (the default) turns it off.")
    retry_backoff_ms: int = Field(default=200, ge=1)
    # A dependency that is down is probed again after a capped exponential backoff with
    # jitter: at most this long, so that work resumes within it of the dependency coming back.
    dependency_probe_max_s: float = Field(default=2.0, gt=0, description="TICKETFLOW_DEPENDENCY_PROBE_MAX_S")
    max_body_bytes: int = Field(default=64 * 1024, ge=1, description="TICKETFLOW_MAX_BODY_BYTES")
    max_subject_bytes: int = Field(default=1024, ge=1)
    idempotency_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    metrics_port: int | None = Field(default=None, description="TICKETFLOW_METRICS_PORT: serve /metrics")
    instance_name: str | None = Field(
        default=None,
        description="TICKETFLOW_INSTANCE_NAME: stable worker name (default: host name); a slot "
        "number is appended so that processes on one host never share a transactional.id.",
    )

    # -- semantic cache (issue 3) --
    qdrant_url: str | None = Field(
        default=None, description="TICKETFLOW_QDRANT_URL: a Qdrant server (one collection, tenant filter "
        "inside the adapter); when unset, each cache worker keeps an embedded Qdrant Edge replica.")
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = Field(default="ticketflow_cache", description="TICKETFLOW_QDRANT_COLLECTION")
    cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, description="TICKETFLOW_CACHE_TTL_S: absolute "
                             "lifetime of a cache entry from its resolution; a hit never extends it.")
    cache_policy_file: Path | None = Field(
        default=None, description="TICKETFLOW_CACHE_POLICY_FILE: JSON hit policies, {'default': {...}, "
        "'tenants': {T: {...}}} as written by `ticketflow cache calibrate --write`.")
    cache_never_keys: list[str] = Field(
        default_factory=list, description="TICKETFLOW_CACHE_NEVER_KEYS: resolution keys never stored "
        "(JSON list), beside answers not marked cacheable, tool answers and escalations.")
    cache_second_opinion: bool = Field(
        default=True, description="TICKETFLOW_CACHE_SECOND_OPINION: the cache stage asks the router's intent "
        "classifier too; a hit whose key it contradicts, or does not rank near the query, is a miss (open set).")
    cache_audit_share: float = Field(
        default=0.05, ge=0, le=1, description="TICKETFLOW_CACHE_AUDIT_SHARE: share of each tenant's cache hits "
        "re-answered on the batch lane and compared on the resolution key (more while the estimate is wide).")
    cache_audit_target: float = Field(
        default=0.99, gt=0, le=1, description="TICKETFLOW_CACHE_AUDIT_TARGET: the precision a tenant's cache "
        "must hold; when the audit's 95 % upper bound drops below it, the tenant's policy is tightened.")
    cache_audit_max_width: float = Field(
        default=0.05, gt=0, le=1, description="TICKETFLOW_CACHE_AUDIT_MAX_WIDTH: while a tenant's 95 % "
        "interval is wider than this, hits are audited at up to four times the base share.")
    embedding_backend: Literal["onnx-int8", "onnx", "torch"] = Field(
        default="onnx-int8", description="TICKETFLOW_EMBEDDING_BACKEND: onnx-int8 (default), onnx or torch")
    # Texts encoded together; the cache stage submits 64 at a time so that encoding the next
    # chunk overlaps searching the last one (bench/cache_bench.py).
    embedding_max_batch: int = Field(default=64, ge=1)
    # How long the embedder waits for more texts when its queue holds less than a batch. 0: the
    # stage already hands over whole batches, and queued requests merge anyway; waiting only
    # added latency at low load (a 5 ms wait was 40 % of a one-ticket lookup).
    embedding_max_wait_ms: float = Field(default=0.0, ge=0)
    embedding_threads: int | None = Field(
        default=None, ge=1, description="TICKETFLOW_EMBEDDING_THREADS: the ONNX encoder's threads "
        "[TICKETFLOW_NATIVE_THREADS]")
    embedding_process: bool = Field(
        default=True, description="TICKETFLOW_EMBEDDING_PROCESS: a worker's encoder runs in a child process, "
        "out of the reach of the worker's GIL (the onnx backends)")
    embedding_processes: int = Field(
        default=1, ge=1, description="TICKETFLOW_EMBEDDING_PROCESSES: encoder processes per worker; a batch is "
        "dealt out among them and encoded in parallel")
    gil_switch_ms: float = Field(
        default=5.0, gt=0, description="TICKETFLOW_GIL_SWITCH_MS: the worker's sys.setswitchinterval; a thread "
        "back from I/O waits up to this long for the GIL while others compute")
    native_threads: int = Field(
        default=1, ge=1, description="TICKETFLOW_NATIVE_THREADS: threads of each native compute pool in a "
        "worker (BLAS, the ONNX encoder). A worker's batches are small: a second thread halved no wait "
        "but its spin-wait cost 3-6 times the CPU of the work (README, Benchmark)")
    # -- router and tools (issue 4) --
    router_rules_file: Path | None = Field(
        default=None, description="TICKETFLOW_ROUTER_RULES_FILE: the routing rules (YAML); default: the "
        "demo bank's rules for the banking77 intents (pipeline/routing/banking77_rules.yaml).")
    router_examples: Path | None = Field(
        default=None, description="TICKETFLOW_ROUTER_EXAMPLES: labelled examples (CSV text,label) of the "
        "intent classifier; default: the tune part of the bundled banking77 train split.")
    router_linear_c: float = Field(
        default=30.0, ge=0, description="TICKETFLOW_ROUTER_LINEAR_C: inverse regularisation of the classifier's "
        "linear model, the calibrated confidence the cache's second opinion asks for (`cache calibrate "
        "--second-opinion` compares values); 0 switches it off (the vote's share and margin stand in).")
    router_policy_file: Path | None = Field(
        default=None, description="TICKETFLOW_ROUTER_POLICY_FILE: the classifier's abstain policy (JSON, "
        "as `cache calibrate --write` writes); default: the cache's default policy.")
    agent_enabled: bool = Field(
        default=True, description="TICKETFLOW_AGENT_ENABLED: hand agent routes to agent.steps.*; when "
        "off (no agent workers run), such tickets are escalated with reason agent_unavailable.")
    # -- LLM agent (issue 5) --
    llm_provider: Literal["simulated", "openai"] = Field(
        default="simulated", description="TICKETFLOW_LLM_PROVIDER: simulated (embedded default) or openai "
        "(any OpenAI-compatible endpoint: TICKETFLOW_LLM_BASE_URL, TICKETFLOW_LLM_API_KEY).")
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    # The cascade's tiers, cheapest first: cheap -> mid -> strong (an empty mid model: two tiers).
    llm_cheap_model: str = Field(default="gpt-4.1-nano", description="TICKETFLOW_LLM_CHEAP_MODEL")
    llm_mid_model: str | None = Field(default="gpt-4.1-mini", description="TICKETFLOW_LLM_MID_MODEL: the "
                                      "tier between cheap and strong; empty: none")
    llm_strong_model: str = Field(default="gpt-4.1", description="TICKETFLOW_LLM_STRONG_MODEL")
    llm_fallback_model: str | None = Field(
        default="gpt-4.1-mini", description="TICKETFLOW_LLM_FALLBACK_MODEL: used while a model's breaker is open")
    llm_structured_output: Literal["json_schema", "json_object"] = Field(
        default="json_schema", description="TICKETFLOW_LLM_STRUCTURED_OUTPUT: how the OpenAI-compatible provider "
        "asks for a reply schema: json_schema (OpenAI) or json_object with a schema (llama.cpp's server)")
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1)
    llm_breaker_failures: int = Field(default=5, ge=1)
    llm_breaker_cooldown_s: float = Field(default=30.0, gt=0)
    llm_rate_per_s: float = Field(default=200.0, gt=0, description="TICKETFLOW_LLM_RATE_PER_S: calls per "
                                  "second per provider and model, shared by all workers (Redis)")
    llm_rate_burst: int = Field(default=200, ge=1)
    pricing_file: Path | None = Field(
        default=None, description="TICKETFLOW_PRICING_FILE: JSON {model: {input, cached_input, output}} in USD "
        "per 1M tokens, over the built-in list prices")
    sim_seed: int = Field(default=7, description="TICKETFLOW_SIM_SEED: the simulated provider's seed")
    sim_fault_rate: float = Field(default=0.0, ge=0, le=1, description="TICKETFLOW_SIM_FAULT_RATE")
    sim_crash_after_billing: int = Field(default=0, ge=0, description="TICKETFLOW_SIM_CRASH_AFTER_BILLING: fault "
                                         "injection for tests: the worker kills itself (SIGKILL) right after the "
                                         "simulated provider bills its n-th call, before the reply is recorded "
                                         "(0: never)")
    sim_time_scale: float = Field(default=1.0, gt=0, description="TICKETFLOW_SIM_TIME_SCALE: <1 speeds "
                                  "the simulated latency up (tests)")
    agent_max_steps: int = Field(default=6, ge=1)
    agent_max_tokens: int = Field(default=24_000, ge=1)
    agent_max_cost_micros: int = Field(default=60_000, ge=1)
    agent_interactive_concurrency: int = Field(default=512, ge=1)
    agent_batch_concurrency: int = Field(default=64, ge=1)
    agent_batch_models: dict[str, str] = Field(
        default_factory=dict, description="TICKETFLOW_AGENT_BATCH_MODELS: JSON {tier: model} for the batch lane "
        "(cheapest first; e.g. cheaper models for backfills); empty: the interactive lane's tiers")
    json_egress: bool = Field(default=False, description="TICKETFLOW_JSON_EGRESS: workers also write every answer "
                              "as JSON to tickets.responses.json (for kcat, jq)")
    gateway_rate_per_s: float = Field(default=200.0, gt=0, description="TICKETFLOW_GATEWAY_RATE_PER_S: requests "
                                      "a second per tenant, over every gateway process (429 beyond)")
    gateway_rate_burst: int = Field(default=400, ge=1, description="TICKETFLOW_GATEWAY_RATE_BURST")
    gateway_max_request_bytes: int = Field(default=256 * 1024, ge=1024, description="TICKETFLOW_GATEWAY_MAX_"
                                           "REQUEST_BYTES: larger request bodies get 413")
    gateway_produce_timeout_s: float = Field(default=10.0, gt=0, description="TICKETFLOW_GATEWAY_PRODUCE_"
                                             "TIMEOUT_S: a ticket not acknowledged by Kafka in this time gets 503")
    llm_store_completions: bool = Field(
        default=False, description="TICKETFLOW_LLM_STORE_COMPLETIONS: ask an OpenAI-compatible provider to keep "
        "each completion (store=true, metadata ticketflow_request_id), so that a reply served to a worker killed "
        "before it recorded the reply is found again (GET /v1/chat/completions?metadata...) instead of bought "
        "twice. Off by default: the provider then keeps the tickets' text (OpenAI: 30 days).")
    llm_batch_rate_share: float = Field(default=0.5, gt=0, le=1, description="TICKETFLOW_LLM_BATCH_RATE_SHARE: the "
                                        "share of each provider's rate limit the batch lane may use")
    llm_batch_api: bool = Field(
        default=False, description="TICKETFLOW_LLM_BATCH_API: send the batch lane's calls through the "
        "provider's Batch API (half the price, answers within its completion window: up to 24 h at OpenAI); "
        "off by default because it trades a backfill's latency for its cost. Raise "
        "TICKETFLOW_AGENT_BATCH_CONCURRENCY with it: each waiting step holds a slot for the whole window.")
    llm_batch_max_lines: int = Field(default=500, ge=1, description="TICKETFLOW_LLM_BATCH_MAX_LINES: calls per job")
    llm_batch_max_wait_s: float = Field(default=2.0, ge=0, description="TICKETFLOW_LLM_BATCH_MAX_WAIT_S: how long "
                                        "calls gather before a job is submitted")
    llm_batch_poll_s: float = Field(default=10.0, gt=0, description="TICKETFLOW_LLM_BATCH_POLL_S: how often a "
                                    "job's status is asked (the simulated provider's: times the time scale)")
    sim_batch_window_s: float = Field(default=60.0, gt=0, description="TICKETFLOW_SIM_BATCH_WINDOW_S: the "
                                      "simulated Batch API's completion time (times the time scale)")
    cascade_min_confidence: dict[str, float] = Field(
        default_factory=lambda: {"cheap": 0.80, "mid": 0.72},
        description="TICKETFLOW_CASCADE_MIN_CONFIDENCE: JSON {tier: confidence below which a tier's answer "
        "goes to the next tier}; bench/cascade_calibration.py derives them from labelled tickets")
    cascade_sensitive_confidence: float = Field(
        default=0.77, ge=0, le=1, description="TICKETFLOW_CASCADE_SENSITIVE_CONFIDENCE: below the top tier, "
        "an answer about a sensitive key (lost/stolen/compromised card, unrecognised payment, refund, closing "
        "an account) stands only from this confidence")
    router_shortlist: int = Field(default=5, ge=1, description="TICKETFLOW_ROUTER_SHORTLIST: candidate "
                                  "intents the router hands the agent (its prompt lists these, not every key)")
    budget_profiles: dict[str, int] = Field(
        default_factory=lambda: {"default": 30_000, "urgent": 60_000},
        description="TICKETFLOW_BUDGET_PROFILES: JSON {profile: micro-dollars one ticket may spend}")
    tenant_daily_budget_micros: int = Field(default=50_000_000, ge=0)
    tenant_budgets: dict[str, int] = Field(
        default_factory=dict, description="TICKETFLOW_TENANT_BUDGETS: JSON {tenant: daily micro-dollars}")
    tools_database_url: str | None = Field(
        default=None, description="TICKETFLOW_TOOLS_DATABASE_URL: SQLAlchemy URL of the tools' data, e.g. "
        "postgresql+psycopg://user@host/db; default: SQLite at STATE_DIR/bank.db.")
    tool_cache_ttl_s: int = Field(default=300, ge=1, description="TICKETFLOW_TOOL_CACHE_TTL_S")
    tool_breaker_failures: int = Field(default=5, ge=1)
    tool_breaker_cooldown_s: float = Field(default=30.0, gt=0)
    tool_max_attempts: int = Field(default=3, ge=1)

    def bootstrap_servers(self) -> str:
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        return f"127.0.0.1:{self.local_kafka_port}"

    def redis_key_prefix(self) -> str:
        """Prefix of every Redis key (claims, KB versions, redrive marks), per topic prefix."""
        return f"ticketflow:{self.topic_prefix}"

    def tools_database(self) -> str:
        return self.tools_database_url or f"sqlite:///{(self.state_dir / 'bank.db').resolve()}"

    def redis_location(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.local_redis_port}/0"

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by every client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers(),
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        if self.kafka_debug:
            conf["debug"] = self.kafka_debug
        return conf


def load_settings(**overrides: Any) -> Settings:
    """Read settings once: TOML file (``TICKETFLOW_CONFIG``), then environment, then overrides."""
    file_values: dict[str, Any] = {}
    config_path = os.environ.get("TICKETFLOW_CONFIG")
    if config_path:
        try:
            file_values = tomllib.loads(Path(config_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read config file {config_path}: {exc}") from exc
    try:
        env_only = Settings()
        merged = {**file_values, **env_only.model_dump(exclude_unset=True), **overrides}
        return Settings.model_validate(merged) if merged else env_only
    except ValueError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from exc
