"""The one settings object. Every knob is an environment variable with the LOTABOTS_ prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime configuration shared by every LotaBots process."""

    model_config = SettingsConfigDict(env_prefix="LOTABOTS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=REPO_ROOT / ".data", description="state: broker, SQLite, chDB, model")
    database_url: str = Field(default="", description="SQLAlchemy async URL; SQLite file under data_dir if empty")
    kafka_bootstrap: str = "127.0.0.1:9092"
    clickhouse_url: str = Field(default="", description="clickhouse-connect DSN; chdb:///<data_dir>/chdb if empty")
    model_dir: Path | None = Field(default=None, description="built model cache; <data_dir>/models if unset")
    model_variant: str = Field(  # inference engine (issue 8): see bench/README.md "Inference engine"
        default="fp32",
        description="fp32 (greedy-exact to the reference) | int4 (fastest on CPU: the GGUF's own 4-bit blocks, "
        "recommended for CPU workers) | int4-fp32 (exact; fastest on one row, see model_single_row_variant) | int8 / int8-dq (8-bit integer compute, bench/README.md) | fp16 (GPU, with inference_device=cuda)",
    )
    model_single_row_variant: str = Field(
        default="int4-fp32",
        description="on CPU workers with model_variant fp32, decode steps of exactly one row (a single stream) run on this variant "
        "instead: int4-fp32 is the GGUF's own weights in float32 arithmetic (greedy-identical to fp32 on "
        "all 69 reference and held-out prompts) and about 1.5x fp32 on one row, slower from two rows on "
        "(bench/README.md); its session costs about 200 MB more; empty = off",
    )
    tiers_file: Path = Path(__file__).resolve().parent / "tiers.toml"

    # gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    public_base_url: str = ""
    gateway_linger_ms: int = Field(default=0, ge=0, description="producer batching window on the submit path (ms); "
                                   "0: concurrent submits still batch while a send is in flight")
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="how long a submit waits for Kafka to acknowledge its publish (acks=all) "
        "before answering 503 queue_unavailable with Retry-After; retried with the same Idempotency-Key it "
        "is published again (consumers dedupe by request id)")
    long_poll_max_s: float = Field(default=60.0, gt=0, description="cap on Prefer: wait=N and ?wait=N")
    # token streaming (docs/openai.md): workers publish text deltas to `results.tokens`, gateways fan them out
    inference_stream_tokens: bool = Field(default=True, description="workers publish text deltas per decode step")
    stream_keepalive_s: float = Field(default=15.0, gt=0, description="SSE keep-alive comment interval")
    stream_buffer_chars: int = Field(default=8_000_000, ge=10_000,
                                     description="characters of recent streamed text a gateway keeps for resumes")
    stream_buffer_linger_s: float = Field(default=120.0, ge=0,
                                          description="how long a finished request's chunks stay for replays")
    openai_wait_max_s: float = Field(default=600.0, gt=0,
                                     description="how long a non-streaming chat completion (or response) "
                                                 "waits for its result")

    # auth service (docs/auth.md)
    auth_host: str = "127.0.0.1"
    auth_port: int = 8001
    auth_embedded: bool = Field(default=True, description="serve the auth routes from the gateway process too")
    auth_issuer: str = "lotabots-auth"
    auth_audience: str = "lotabots-api"
    auth_jwt_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    auth_access_token_ttl_s: int = Field(default=900, gt=0)
    auth_refresh_token_ttl_s: int = Field(default=14 * 86400, gt=0, description="idle life of one refresh token")
    auth_session_max_age_s: int = Field(default=90 * 86400, gt=0, description="absolute life of a login session")
    auth_clock_leeway_s: int = Field(default=30, ge=0)
    auth_key_encryption_key: SecretStr | None = Field(
        default=None, description="base64url 32-byte AES key sealing signing keys; <data_dir>/auth/signing.kek if unset"
    )
    auth_key_publish_lead_s: int = Field(default=600, ge=0, description="a rotated key is in the JWKS this long before it signs")
    auth_key_reload_s: float = Field(default=30.0, ge=0)
    auth_jwks_url: str = Field(default="", description="where the gateway fetches the JWKS; read from the DB if empty")
    auth_jwks_refresh_s: float = Field(default=300.0, gt=0)
    auth_jwks_min_refetch_s: float = Field(default=5.0, ge=0, description="least time between refetches on an unknown kid")
    auth_revocation_poll_s: float = Field(default=5.0, ge=0, description="how often the gateway reloads revoked sessions")
    auth_bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    auth_hash_workers: int = Field(default=0, ge=0, description="password-hashing threads; 0 = CPUs - 1 (at least 1)")
    auth_password_min_length: int = Field(default=10, ge=1)
    auth_require_email_verification: bool = True
    auth_registration_open: bool = True
    auth_default_tier: str = "free"
    auth_lockout_threshold: int = Field(default=5, gt=0, description="failed logins per account before lockout")
    auth_lockout_address_threshold: int = Field(default=50, gt=0, description="failed logins per client address")
    auth_lockout_window_s: int = Field(default=900, gt=0)
    auth_lockout_duration_s: int = Field(default=900, gt=0)
    auth_reset_token_ttl_s: int = Field(default=3600, gt=0)
    auth_verify_token_ttl_s: int = Field(default=3 * 86400, gt=0)
    auth_invite_token_ttl_s: int = Field(default=7 * 86400, gt=0)
    auth_link_template: str = "{base_url}/account/{purpose}#token={token}"
    auth_log_email_links: bool = Field(default=False, description="development only: log verification/reset links")

    # mailer: auth.events -> SMTP (docs/mailer.md; issue 13)
    smtp_host: str = Field(default="", description="SMTP relay; empty = the development SMTP server (dev_smtp_*), "
                                                   "which `lotabots up` starts")
    smtp_port: int = Field(default=0, ge=0, le=65535, description="0 = 25 (none), 587 (starttls) or 465 (tls)")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="starttls", description="starttls = upgrade a plain connection (required); tls = implicit TLS "
                                        "(SMTPS); ignored for the development server (always plain, loopback)")
    smtp_username: str = Field(default="", description="SMTP AUTH user; empty = no AUTH")
    smtp_password: SecretStr | None = None
    smtp_validate_certs: bool = Field(default=True, description="verify the relay's certificate (tls, starttls)")
    smtp_timeout_s: float = Field(default=30.0, gt=0, description="one SMTP command, connect included")
    mail_from: str = Field(default="LotaBots <no-reply@lotabots.localhost>", description="From: of every mail")
    mail_product_name: str = Field(default="LotaBots", description="the name the mails speak of")
    mail_message_id_domain: str = Field(default="", description="right-hand side of Message-ID; empty = mail_from's domain")
    mailer_group: str = Field(default="mailer", description="the mailer's consumer group on auth.events")
    mailer_concurrency: int = Field(default=4, gt=0, description="SMTP connections the mailer keeps open")
    mailer_max_in_flight: int = Field(default=256, gt=0, description="mails held (sending or waiting to retry)")
    mailer_retry_initial_s: float = Field(default=1.0, gt=0, description="first back-off after a transient failure")
    mailer_retry_max_s: float = Field(default=300.0, gt=0, description="back-off doubles up to this")
    mailer_retry_jitter: float = Field(default=0.2, ge=0, lt=1, description="each back-off is scaled by 1 +/- this")
    mailer_give_up_after_s: float = Field(
        default=86400.0, gt=0, description="a mail failing transiently this long is dead-lettered")
    dev_smtp_host: str = Field(default="127.0.0.1", description="development SMTP server: listen address")
    dev_smtp_port: int = Field(default=8025, gt=0, le=65535, description="development SMTP server: port")
    dev_mailbox: bool = Field(default=True, description="GET /v1/dev/mailbox (loopback callers only) while the "
                                                       "development SMTP server is in use")

    # kafka client behaviour
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 2_000
    kafka_max_poll_interval_ms: int = 300_000

    # inference worker
    inference_threads: int = 0  # 0 = all cores
    inference_max_batch: int = 16
    inference_max_tokens_in_flight: int = 32_768
    inference_prefill_chunk: int = Field(default=256, ge=1, description="most prompt tokens per prefill call")
    inference_prefill_step_ratio: float = Field(
        default=0.75, ge=0, description="while streams decode, a prefill chunk takes about this share of a decode "
                                        "step (a long prompt stretches their token gaps by at most that); 0 = whole chunks")
    inference_prefill_whole_tokens: int = Field(
        default=64, ge=0, description="a prompt (or its uncached rest) this short is prefilled in one call")
    inference_prefix_cache_mb: int = Field(
        default=256, ge=0, description="prefix KV cache per worker: KV of recent sequences reused by prompts that "
                                       "start the same way (conversations, autonomy system prompts); 0 = off")
    inference_prefix_block: int = Field(default=16, ge=1, description="prefix cache match granularity, in tokens")
    inference_device: str = "auto"  # auto | cpu | cuda
    inference_kv_capacity: int = Field(
        default=2048, ge=16, description="`-slots` model variants: KV columns per slot, the longest prompt + "
                                         "max_tokens a worker runs (each of max_batch + 1 slots holds this many)")
    inference_cuda_graphs: bool = Field(
        default=True, description="`-slots` variants on CUDA: capture the decode step as a CUDA graph and replay it")
    inference_drain_timeout_s: float = 60.0  # SIGTERM: finish in-flight generations this long, then hand back

    # worker processes serve /healthz and /metrics here (0 = off)
    metrics_port: int = 0

    # rate limits and token quotas on submits (docs/limits.md)
    rate_limit_backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory = one gateway replica; redis = state shared by several")
    redis_url: str = "redis://127.0.0.1:6379/0"
    rate_limit_redis_prefix: str = Field(default="lotabots:limits", description="Redis key prefix")
    rate_limit_redis_timeout_s: float = Field(default=0.5, gt=0)
    rate_limit_fail_open: bool = Field(default=True, description="admit (and count an error) when Redis is away")
    rate_limit_inflight_ttl_s: float = Field(
        default=900.0, gt=0, description="an in-flight request whose end was never seen frees its slot after this")
    rate_limit_key_overrides: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='per API key id: {"requests_per_minute": N, "concurrent_requests": M}, on top of the tier')
    quota_state_catch_up_s: float = Field(default=30.0, ge=0, description="read usage.quota-state this long at start")

    # usage pipeline: Faust app, usage service, ClickHouse (docs/usage.md)
    usage_url: str = Field(default="", description="usage service base URL; http://127.0.0.1:<usage_port> if empty")
    usage_host: str = "127.0.0.1"
    usage_port: int = 8002
    usage_stream_app_id: str = "lotabots-usage"
    usage_stream_store: str = Field(default="memory://", description="Faust table store (rocksdb:// in production)")
    usage_stream_dedupe_ttl_s: int = Field(default=8 * 86400, gt=0, description="> usage.events retention (replays)")
    usage_stream_replication_factor: int | None = Field(
        default=None, gt=0, description="of Faust's changelog topics; unset: the catalogue's for the live brokers")
    usage_stream_commit_interval_s: float = Field(default=1.0, gt=0)
    usage_stream_compression: Literal["lz4", "gzip", "none"] = Field(
        default="lz4", description="compression of what the Faust app produces (billable facts, changelogs): "
        "lz4 halves the broker's work for a few µs per batch")
    usage_sink_batch_size: int = Field(default=20000, gt=0)
    usage_sink_batch_wait_s: float = Field(default=0.5, gt=0)
    usage_sql_max_rows: int = Field(default=10_000, gt=0, description="finance SQL: result row limit")
    usage_sql_max_seconds: float = Field(default=10.0, gt=0, description="finance SQL: execution time limit")
    usage_read_timeout_s: float = Field(default=30.0, gt=0, description="gateway -> usage service HTTP timeout")
    usage_finance_user: str = Field(default="lotabots_finance_reader", description="ClickHouse server only")
    usage_finance_password: SecretStr | None = Field(default=None, description="creates the finance user (server)")
    usage_service_token: SecretStr | None = Field(default=None, description="bearer token the usage service requires")

    # local autoscaler and its test backend (docs/operations.md, docs/testing.md; issue 7)
    inference_backend: Literal["onnx", "simulated", "triton"] = Field(
        default="onnx", description="simulated = TEST BACKEND: sleeps per token, no model, no CPU; "
                                    "triton = a remote KServe v2 / Triton server (docs/triton.md)")
    simulated_ms_per_token: float = Field(default=20.0, ge=0, description="test backend: time per token per row")
    autoscale_poll_interval_s: float = Field(default=2.0, gt=0, description="how often lag is read (KEDA polls 10s)")
    autoscale_scale_up_window_s: float = Field(default=0.0, ge=0, description="HPA scaleUp stabilizationWindow")
    autoscale_scale_up_pods: int = Field(default=4, gt=0, description="HPA scaleUp policy: add at most this many ...")
    autoscale_scale_up_period_s: float = Field(default=15.0, gt=0, description="... per this period")
    autoscale_scale_down_window_s: float = Field(default=120.0, ge=0, description="HPA scaleDown stabilizationWindow")
    autoscale_scale_down_pods: int = Field(default=1, gt=0, description="HPA scaleDown policy: stop at most ...")
    autoscale_scale_down_period_s: float = Field(default=60.0, gt=0, description="... per this period")
    autoscale_cooldown_s: float = Field(default=300.0, ge=0, description="KEDA cooldownPeriod: idle time before 1 -> 0")
    autoscale_worker_metrics_port_base: int = Field(
        default=0, ge=0, description="workers the autoscaler starts serve /metrics from here up (0 = off)")

    # webhooks: endpoints, dispatcher, SSRF guard (docs/webhooks.md; issue 5)
    webhook_allow_hosts: str = Field(
        default="", description="DEVELOPMENT/TESTS: comma-separated hostnames, IPs or CIDRs the SSRF guard lets through")
    webhook_retry_schedule_s: str = Field(
        default="", description="comma-separated retry delays in seconds; empty = Standard Webhooks 5s,5m,30m,2h,5h,10h,10h")
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1, description="each retry delay is scaled by 1 +/- this")
    webhook_retry_after_max_s: float = Field(default=36_000.0, ge=0, description="cap on a receiver's Retry-After")
    webhook_connect_timeout_s: float = Field(default=5.0, gt=0)
    webhook_read_timeout_s: float = Field(default=15.0, gt=0)
    webhook_total_timeout_s: float = Field(default=30.0, gt=0, description="one attempt, connect to last byte")
    webhook_max_response_bytes: int = Field(default=65_536, gt=0, description="bytes of a response read at most")
    webhook_log_response_bytes: int = Field(default=2048, ge=0, description="bytes of a response kept in the log")
    webhook_disable_after_failing_s: float = Field(
        default=5 * 86400.0, gt=0, description="an endpoint failing continuously this long is disabled")
    webhook_secret_overlap_s: int = Field(default=86400, ge=0, description="old secret keeps signing this long")
    webhook_max_in_flight: int = Field(default=128, gt=0, description="dispatcher: concurrent deliveries")

    # levels of autonomy (docs/autonomy.md; issue 6)
    autonomy_policy_ttl_s: float = Field(
        default=5.0, ge=0, description="gateway: how long a tenant's autonomy policy is cached in memory")
    autonomy_profiles_path: Path | None = Field(
        default=None, description="worker: per-level prompt templates and generation settings (TOML); "
                                  "empty = inference/autonomy_profiles.toml")

    # Triton / KServe v2 backend and the v2 model server (docs/triton.md; issue 8)
    triton_url: str = Field(default="", description="host:port, no scheme; empty = 127.0.0.1:8001 (grpc) or :8000 (http)")
    triton_protocol: Literal["grpc", "http"] = Field(default="grpc", description="grpc propagates cancellation")
    triton_model: str = Field(default="ensemble", description="model name on the server (also what serve v2-model serves)")
    triton_model_version: str = Field(default="", description="empty = the server's version policy")
    triton_max_concurrency: int = Field(default=32, gt=0, description="concurrent generation calls per worker")
    triton_timeout_s: float = Field(default=600.0, gt=0, description="one generation call, send to last byte")
    triton_max_attempts: int = Field(default=3, gt=0, description="tries while the server is unavailable")
    v2_server_http_port: int = Field(default=8080, gt=0, description="lotabots serve v2-model: HTTP/REST port")
    v2_server_grpc_port: int = Field(default=8081, ge=0, description="lotabots serve v2-model: gRPC port (0 = off)")

    # local broker
    kafka_version: str = "4.1.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093

    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = Path(self.data_dir).resolve()
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'lotabots.db'}"
        if not self.clickhouse_url:
            self.clickhouse_url = f"chdb:///{self.data_dir / 'chdb'}"
        if not self.usage_url:
            self.usage_url = f"http://{self.usage_host}:{self.usage_port}"
        if self.model_dir is None:
            self.model_dir = self.data_dir / "models"
        return self

    @property
    def smtp_is_dev(self) -> bool:
        """No relay configured: mail goes to the development SMTP server, which stores it under data_dir."""
        return not self.smtp_host

    @property
    def dev_mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def models_path(self) -> Path:
        assert self.model_dir is not None
        return Path(self.model_dir)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
