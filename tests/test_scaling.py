"""The scaling arithmetic: KEDA's Kafka-scaler semantics, the partition cap, activation, stabilisation."""

from __future__ import annotations

import pytest

from consumers.scaling import (
    PartitionLag,
    ScaleBehaviour,
    ScaleStabiliser,
    ScalingBounds,
    desired_workers,
    total_lag,
)
from lotabots.settings import Settings
from tests.stack import REPO

PRO = ScalingBounds(lag_threshold=4, activation_lag_threshold=0, workers_min=1, workers_max=4)
SCALE_TO_ZERO = ScalingBounds(lag_threshold=4, activation_lag_threshold=5, workers_min=0, workers_max=4)
FAST = ScaleBehaviour(scale_up_window_s=0, scale_up_pods=4, scale_up_period_s=15,
                      scale_down_window_s=30, scale_down_pods=1, scale_down_period_s=10, cooldown_s=60)


# ---- the metric ------------------------------------------------------------------------------

def test_lag_is_end_minus_committed_summed_over_partitions() -> None:
    parts = [PartitionLag(0, committed=10, end=15), PartitionLag(1, committed=7, end=7),
             PartitionLag(2, committed=3, end=11)]
    assert total_lag(parts) == 5 + 0 + 8


def test_partition_without_a_commit_counts_from_its_beginning() -> None:
    # offsetResetPolicy: earliest — the backlog of a new group is lag
    assert PartitionLag(0, committed=-1, end=12, beginning=2).lag == 10


def test_lag_is_never_negative() -> None:
    assert PartitionLag(0, committed=20, end=15).lag == 0


# ---- the recommendation ----------------------------------------------------------------------

@pytest.mark.parametrize(("lag", "want"), [(0, 1), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (16, 4)])
def test_desired_is_lag_over_threshold_rounded_up_within_min(lag: int, want: int) -> None:
    assert desired_workers(lag, partitions=8, bounds=PRO) == want


def test_desired_never_exceeds_workers_max() -> None:
    assert desired_workers(1000, partitions=8, bounds=PRO) == 4


def test_desired_never_exceeds_the_partition_count() -> None:
    many = ScalingBounds(lag_threshold=1, activation_lag_threshold=0, workers_min=1, workers_max=16)
    assert desired_workers(1000, partitions=3, bounds=many) == 3


def test_workers_min_above_partitions_is_capped_too() -> None:
    wide = ScalingBounds(lag_threshold=4, activation_lag_threshold=0, workers_min=6, workers_max=8)
    assert desired_workers(0, partitions=2, bounds=wide) == 2


def test_scale_to_zero_tier_stays_idle_until_lag_exceeds_activation() -> None:
    assert desired_workers(0, partitions=4, bounds=SCALE_TO_ZERO) == 0
    assert desired_workers(5, partitions=4, bounds=SCALE_TO_ZERO) == 0  # at the threshold: still idle
    assert desired_workers(6, partitions=4, bounds=SCALE_TO_ZERO) == 2


def test_active_scale_to_zero_tier_gets_at_least_one_worker() -> None:
    eager = ScalingBounds(lag_threshold=10, activation_lag_threshold=0, workers_min=0, workers_max=4)
    assert desired_workers(1, partitions=4, bounds=eager) == 1


def test_activation_does_not_hold_back_a_tier_with_a_minimum() -> None:
    # KEDA's activation only decides 0 <-> 1; with workers_min >= 1 the HPA sizes from the lag alone
    bounds = ScalingBounds(lag_threshold=2, activation_lag_threshold=10, workers_min=1, workers_max=8)
    assert desired_workers(8, partitions=8, bounds=bounds) == 4


# ---- stabilisation and rate policies ---------------------------------------------------------

def test_scale_up_is_immediate_but_limited_per_period() -> None:
    big = ScalingBounds(lag_threshold=1, activation_lag_threshold=0, workers_min=1, workers_max=12)
    s = ScaleStabiliser(big, FAST)
    first = s.decide(0.0, lag=100, partitions=12)
    assert (first.recommended, first.target, first.reason) == (12, 5, "rate policy")  # +4 per 15 s
    assert s.decide(5.0, lag=100, partitions=12).target == 5
    assert s.decide(15.0, lag=100, partitions=12).target == 9
    assert s.decide(30.0, lag=100, partitions=12).target == 12


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    s = ScaleStabiliser(PRO, FAST)
    assert s.decide(0.0, lag=40, partitions=4).target == 4
    targets = [s.decide(t, lag=0, partitions=4).target for t in (1.0, 10.0, 29.0)]
    assert targets == [4, 4, 4]  # the lag-40 reading at t=0 is still in the 30 s window
    assert s.decide(31.0, lag=0, partitions=4).target == 3  # window passed: one worker per period


def test_scale_down_removes_one_worker_per_period() -> None:
    s = ScaleStabiliser(PRO, FAST)
    s.decide(0.0, lag=40, partitions=4)
    seen = [s.decide(float(t), lag=0, partitions=4).target for t in range(31, 70)]
    assert seen[0] == 3
    assert seen.index(2) == 10  # t=41: 10 s after the first step
    assert seen.index(1) == 20
    assert seen[-1] == 1  # never below workers_min


def test_oscillating_lag_does_not_flap() -> None:
    s = ScaleStabiliser(PRO, FAST)
    targets = [s.decide(float(t), lag=(16 if t % 4 == 0 else 0), partitions=4).target for t in range(0, 60)]
    assert targets[0] == 4
    assert min(targets) == 4  # every dip is inside the down window of a spike


def test_scale_up_window_ignores_a_short_spike() -> None:
    cautious = ScaleBehaviour(scale_up_window_s=20, scale_down_window_s=30)
    s = ScaleStabiliser(PRO, cautious)
    s.decide(0.0, lag=0, partitions=4)
    assert s.decide(5.0, lag=16, partitions=4).target == 1  # the 0-lag reading is in the up window
    assert s.decide(21.0, lag=16, partitions=4).target == 4  # lag sustained over the window


def test_idle_tier_at_zero_activates_at_once_and_waits_for_cooldown_before_zero() -> None:
    s = ScaleStabiliser(SCALE_TO_ZERO, FAST, initial=0)
    assert s.decide(0.0, lag=3, partitions=4).target == 0  # below activation
    up = s.decide(1.0, lag=30, partitions=4)
    assert (up.target, up.reason) == (1, "activated")
    assert s.decide(2.0, lag=30, partitions=4).target == 4
    held = [s.decide(float(t), lag=0, partitions=4) for t in range(3, 61)]
    assert all(d.target >= 1 for d in held)  # cooldown: 60 s since the last active reading
    assert held[-1].target == 1 and held[-1].reason == "cooldown"
    gone = s.decide(62.0, lag=0, partitions=4)
    assert (gone.target, gone.reason) == (0, "deactivated after cooldown")


def test_target_never_exceeds_partitions_even_from_a_larger_start() -> None:
    s = ScaleStabiliser(PRO, FAST, initial=4)
    assert s.decide(0.0, lag=100, partitions=2).target == 2


# ---- alignment with the KEDA ScaledObject that `lotabots k8s render` writes ------------------

def test_default_behaviour_matches_the_rendered_scaled_object() -> None:
    from lotabots.k8s_render import render_tier
    from lotabots.tiers import load_tier_config

    toml = (REPO / "lotabots" / "tiers.toml").read_text()
    tiers = load_tier_config(REPO / "lotabots" / "tiers.toml")
    behaviour = ScaleBehaviour.from_settings(Settings())
    assert behaviour == ScaleBehaviour()
    for tier in tiers.tiers.values():
        so = next(d for d in render_tier(tier, toml) if d["kind"] == "ScaledObject")["spec"]
        hpa = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        trigger = so["triggers"][0]["metadata"]
        assert hpa["scaleDown"]["stabilizationWindowSeconds"] == behaviour.scale_down_window_s
        assert hpa["scaleDown"]["policies"] == [
            {"periodSeconds": behaviour.scale_down_period_s, "type": "Pods", "value": behaviour.scale_down_pods}]
        assert hpa["scaleUp"]["stabilizationWindowSeconds"] == behaviour.scale_up_window_s
        assert hpa["scaleUp"]["policies"] == [
            {"periodSeconds": behaviour.scale_up_period_s, "type": "Pods", "value": behaviour.scale_up_pods}]
        assert so["cooldownPeriod"] == behaviour.cooldown_s
        bounds = ScalingBounds.of(tier)
        assert int(trigger["lagThreshold"]) == bounds.lag_threshold
        assert int(trigger["activationLagThreshold"]) == bounds.activation_lag_threshold
        assert trigger["consumerGroup"] == tier.consumer_group and trigger["topic"] == tier.request_topic
        assert so["maxReplicaCount"] == desired_workers(10**9, tier.request_partitions, bounds)
        assert so["minReplicaCount"] == desired_workers(0, tier.request_partitions, bounds)
