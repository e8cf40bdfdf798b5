"""What `lotabots autoscale status` (and `lotabots status`) print from the autoscaler's status file."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.autoscaler import Autoscaler, read_status, status_lines, status_path
from consumers.scaling import ScaleDecision
from lotabots.settings import Settings
from lotabots.tiers import load_tier_config
from tests.stack import REPO

TIERS = load_tier_config(REPO / "lotabots" / "tiers.toml")


def test_status_shows_lag_desired_and_actual_workers_per_tier(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    scaler = Autoscaler(settings, TIERS, tier_names=["pro", "free"])
    scaler.scalers["pro"].decision = ScaleDecision(lag=13, partitions=4, active=True, recommended=4, target=4,
                                                   previous=1, reason="recommended")
    scaler.scalers["pro"].stabiliser.target = 4
    scaler.write_status("running")

    status = read_status(settings)
    assert status is not None and status["alive"]
    assert list(status["tiers"]) == ["pro", "free"]
    pro = status["tiers"]["pro"]
    assert (pro["lag"], pro["desired"], pro["workers"], pro["partitions"]) == (13, 4, 0, 4)
    lines = status_lines(settings)
    assert lines[0].startswith("autoscaler pid ")
    assert "pro" in lines[1] and "lag     13" in lines[1] and "desired 4" in lines[1] and "workers 0" in lines[1]
    assert "free" in lines[2] and "lag      ?" in lines[2]


def test_status_of_a_dead_autoscaler_says_it_is_not_running(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    Autoscaler(settings, TIERS, tier_names=["pro"]).write_status("running")
    path = status_path(settings)
    doc = json.loads(path.read_text())
    doc["pid"] = 2**22 + 12345  # above pid_max: no such process
    path.write_text(json.dumps(doc))
    assert read_status(settings)["alive"] is False  # type: ignore[index]
    assert status_lines(settings)[0].startswith("autoscaler: not running")


def test_no_status_file_means_never_started(tmp_path: Path) -> None:
    assert read_status(Settings(data_dir=tmp_path)) is None
    assert "not started" in status_lines(Settings(data_dir=tmp_path))[0]
