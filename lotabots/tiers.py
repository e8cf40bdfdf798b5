"""Tier config: the one place that says what each subscription tier gets."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierScaling(_Frozen):
    lag_threshold: int = Field(gt=0)
    activation_lag_threshold: int = Field(default=0, ge=0)


class TierRateLimits(_Frozen):
    requests_per_minute: int = Field(gt=0)
    concurrent_requests: int = Field(gt=0)


class TierQuotas(_Frozen):
    tokens_per_day: int = Field(gt=0)
    tokens_per_month: int = Field(gt=0)


class TierPrices(_Frozen):
    per_request: Decimal = Decimal(0)
    per_1k_input_tokens: Decimal = Decimal(0)
    per_1k_output_tokens: Decimal = Decimal(0)


class TierK8s(_Frozen):
    cpu: str
    memory: str
    gpus: int = 0
    pods: int = 10


class KafkaReplication(_Frozen):
    """How many copies of every partition a Kafka cluster keeps (the ``[kafka]`` table).

    The catalogue (``schemas.topics.replication``) caps these by the cluster's broker count: one broker
    gets replication factor 1 and ``min.insync.replicas`` 1; three or more get the numbers below. The
    local cluster (``lotabots kafka up --brokers N``), ``lotabots kafka topics`` and the Strimzi rendering
    all read them from here.
    """

    replication_factor: int = Field(default=3, gt=0)
    min_insync_replicas: int = Field(default=2, gt=0)
    # broker+controller nodes of the Strimzi KafkaNodePool (infra/k8s)
    k8s_nodes: int = Field(default=3, gt=0)


class TierPolicy(_Frozen):
    """Everything one tier is entitled to."""

    name: str
    request_partitions: int = Field(gt=0)
    workers_min: int = Field(ge=0)
    workers_max: int = Field(gt=0)
    max_tokens_cap: int = Field(gt=0)
    priority: int = 0
    scaling: TierScaling
    rate_limits: TierRateLimits
    quotas: TierQuotas
    prices: TierPrices
    k8s: TierK8s

    @property
    def request_topic(self) -> str:
        return f"requests.{self.name}"

    @property
    def consumer_group(self) -> str:
        return f"inference.{self.name}"


class TierConfig(_Frozen):
    tiers: dict[str, TierPolicy]
    kafka: KafkaReplication = KafkaReplication()

    def get(self, name: str) -> TierPolicy:
        return self.tiers[name]

    @property
    def names(self) -> list[str]:
        return list(self.tiers)


def parse_tier_config(raw: dict) -> TierConfig:
    tiers = {}
    for name, body in raw.get("tiers", {}).items():
        policy = TierPolicy(name=name, **body)
        if policy.workers_min > policy.workers_max:
            raise ValueError(f"tier {name}: workers_min > workers_max")
        tiers[name] = policy
    if not tiers:
        raise ValueError("tier config defines no tiers")
    kafka = KafkaReplication(**raw.get("kafka", {}))
    if kafka.min_insync_replicas > kafka.replication_factor:
        raise ValueError("kafka: min_insync_replicas > replication_factor (every acks=all produce would fail)")
    return TierConfig(tiers=tiers, kafka=kafka)


def load_tier_config(path: Path) -> TierConfig:
    with open(path, "rb") as f:
        return parse_tier_config(tomllib.load(f))


@lru_cache(maxsize=8)
def _cached(path: str) -> TierConfig:
    return load_tier_config(Path(path))


def get_tier_config() -> TierConfig:
    from lotabots.settings import get_settings

    return _cached(str(get_settings().tiers_file))
