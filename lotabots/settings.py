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
    model_variant: str = "fp32"
    tiers_file: Path = Path(__file__).resolve().parent / "tiers.toml"

    # gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    public_base_url: str = ""
    long_poll_max_s: float = Field(default=60.0, gt=0, description="cap on Prefer: wait=N and ?wait=N")

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
    auth_hash_workers: int = Field(default=0, ge=0, description="password-hashing threads; 0 = CPU count")
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

    # kafka client behaviour
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 2_000
    kafka_max_poll_interval_ms: int = 300_000

    # inference worker
    inference_threads: int = 0  # 0 = all cores
    inference_max_batch: int = 16
    inference_max_tokens_in_flight: int = 32_768
    inference_device: str = "auto"  # auto | cpu | cuda
    inference_drain_timeout_s: float = 60.0  # SIGTERM: finish in-flight generations this long, then hand back

    # worker processes serve /healthz and /metrics here (0 = off)
    metrics_port: int = 0

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
        if self.model_dir is None:
            self.model_dir = self.data_dir / "models"
        return self

    @property
    def models_path(self) -> Path:
        assert self.model_dir is not None
        return Path(self.model_dir)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
