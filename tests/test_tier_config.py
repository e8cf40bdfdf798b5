"""The tier config is the one source of per-tier behaviour; adding a tier needs no code change."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lotabots.tiers import load_tier_config, parse_tier_config
from schemas.topics import topic_catalogue

DEFAULT = Path(__file__).resolve().parent.parent / "lotabots" / "tiers.toml"


def test_default_tiers_are_free_pro_enterprise() -> None:
    config = load_tier_config(DEFAULT)
    assert config.names == ["free", "pro", "enterprise"]
    assert config.get("pro").consumer_group == "inference.pro"
    assert all(t.workers_max <= t.request_partitions for t in config.tiers.values())


def test_a_fourth_tier_is_a_config_change_only(tmp_path: Path) -> None:
    raw = tomllib.loads(DEFAULT.read_text())
    raw["tiers"]["team"] = {
        **raw["tiers"]["pro"], "request_partitions": 6, "max_tokens_cap": 2048, "workers_max": 6,
    }
    path = tmp_path / "tiers.toml"
    lines = [DEFAULT.read_text(), "[tiers.team]", "request_partitions = 6", "workers_min = 1", "workers_max = 6",
             "max_tokens_cap = 2048", "[tiers.team.scaling]", "lag_threshold = 3",
             "[tiers.team.rate_limits]", "requests_per_minute = 1200", "concurrent_requests = 64",
             "[tiers.team.quotas]", "tokens_per_day = 5000000", "tokens_per_month = 90000000",
             "[tiers.team.prices]", 'per_request = "0.0001"', 'per_1k_input_tokens = "0.0004"',
             'per_1k_output_tokens = "0.0012"', "[tiers.team.k8s]", 'cpu = "16"', 'memory = "32Gi"', "gpus = 2"]
    path.write_text("\n".join(lines) + "\n")
    config = load_tier_config(path)
    assert config.names == ["free", "pro", "enterprise", "team"]
    topics = {t.name: t for t in topic_catalogue(config)}
    assert topics["requests.team"].partitions == 6
    assert config.get("team").max_tokens_cap == 2048
    assert config.get("team").consumer_group == "inference.team"
    assert parse_tier_config(raw).get("team").request_partitions == 6


def test_inconsistent_tier_is_refused() -> None:
    raw = tomllib.loads(DEFAULT.read_text())
    raw["tiers"]["free"]["workers_min"] = 9
    with pytest.raises(ValueError, match="workers_min"):
        parse_tier_config(raw)
