"""The one settings object. Every knob is an environment variable with the LOTABOTS_ prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
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

    # kafka client behaviour
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 2_000
    kafka_max_poll_interval_ms: int = 300_000

    # inference worker
    inference_threads: int = 0  # 0 = all cores
    inference_max_batch: int = 16
    inference_max_tokens_in_flight: int = 32_768
    inference_device: str = "auto"  # auto | cpu | cuda

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
