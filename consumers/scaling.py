"""How many inference workers a tier should have: KEDA's Kafka-scaler arithmetic plus the HPA's behaviour.

Pure functions and one small state machine, no I/O, so the rules are unit-tested on their own
(tests/test_scaling.py) and the local autoscaler (consumers/autoscaler.py) behaves like the KEDA
ScaledObject that ``lotabots k8s render`` writes for the same tier:

1. **Metric** (KEDA Kafka scaler): total lag = Σ over partitions of end offset − committed offset
   (a partition without a commit counts from its beginning: ``offsetResetPolicy: earliest``).
2. **Recommendation** (:func:`desired_workers`): ``ceil(lag / lagThreshold)``, clamped to
   ``[workers_min, min(workers_max, partitions)]`` (``allowIdleConsumers: false``). With
   ``workers_min = 0`` the tier is idle (0 workers) while lag ≤ ``activationLagThreshold``.
3. **Behaviour** (:class:`ScaleStabiliser`): the HPA's stabilisation windows (scale up to the lowest
   recommendation of the up window, down to the highest of the down window), its rate policies
   (at most N workers added/removed per period), and KEDA's ``cooldownPeriod`` before 1 → 0.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from lotabots.settings import Settings
from lotabots.tiers import TierPolicy


@dataclass(frozen=True)
class PartitionLag:
    """One partition's offsets as the scaler sees them (committed = -1: the group never committed)."""

    partition: int
    committed: int
    end: int
    beginning: int = 0

    @property
    def lag(self) -> int:
        start = self.committed if self.committed >= 0 else self.beginning
        return max(0, self.end - start)


def total_lag(partitions: list[PartitionLag]) -> int:
    """The group's lag on the topic: what KEDA's Kafka scaler reports before capping."""
    return sum(p.lag for p in partitions)


@dataclass(frozen=True)
class ScalingBounds:
    """A tier's scaling knobs, from the tier config (the same values the KEDA ScaledObject gets)."""

    lag_threshold: int
    activation_lag_threshold: int
    workers_min: int
    workers_max: int

    @classmethod
    def of(cls, tier: TierPolicy) -> ScalingBounds:
        return cls(tier.scaling.lag_threshold, tier.scaling.activation_lag_threshold,
                   tier.workers_min, tier.workers_max)


def worker_cap(bounds: ScalingBounds, partitions: int) -> int:
    """Never more workers than partitions: a group member without a partition does nothing."""
    return max(0, min(bounds.workers_max, partitions))


def is_active(lag: int, bounds: ScalingBounds) -> bool:
    """KEDA's activation: the scaler is active when the lag exceeds the activation threshold."""
    return lag > bounds.activation_lag_threshold


def desired_workers(lag: int, partitions: int, bounds: ScalingBounds) -> int:
    """The recommendation for one reading, before stabilisation (KEDA + HPA, AverageValue target).

    Activation only decides 0 ↔ 1 (as in KEDA): with ``workers_min ≥ 1`` the HPA sizes the group from
    the lag alone.
    """
    cap = worker_cap(bounds, partitions)
    floor = min(bounds.workers_min, cap)
    if bounds.workers_min == 0 and not is_active(lag, bounds):
        return 0
    want = math.ceil(lag / bounds.lag_threshold)
    return min(cap, max(floor, 1 if bounds.workers_min == 0 else 0, want))


@dataclass(frozen=True)
class ScaleBehaviour:
    """The HPA ``behavior`` block and KEDA's cooldown (defaults = what ``k8s render`` writes)."""

    scale_up_window_s: float = 0.0
    scale_up_pods: int = 4
    scale_up_period_s: float = 15.0
    scale_down_window_s: float = 120.0
    scale_down_pods: int = 1
    scale_down_period_s: float = 60.0
    cooldown_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ScaleBehaviour:
        return cls(
            settings.autoscale_scale_up_window_s, settings.autoscale_scale_up_pods,
            settings.autoscale_scale_up_period_s, settings.autoscale_scale_down_window_s,
            settings.autoscale_scale_down_pods, settings.autoscale_scale_down_period_s,
            settings.autoscale_cooldown_s,
        )


@dataclass(frozen=True)
class ScaleDecision:
    """One evaluation: what the reading asked for and what the tier gets now."""

    lag: int
    partitions: int
    active: bool
    recommended: int  # desired_workers() of this reading alone
    target: int  # after stabilisation, rate policies and cooldown
    previous: int
    reason: str

    @property
    def direction(self) -> str:
        return "up" if self.target > self.previous else "down" if self.target < self.previous else "none"


class ScaleStabiliser:
    """Turns recommendations into a worker count the way the HPA (1..N) and KEDA (0 ↔ 1) do.

    ``target`` is the tier's replica count (the Deployment's ``spec.replicas``), which the autoscaler
    then makes true by starting/stopping processes. Time is passed in (monotonic seconds), so tests
    drive it without sleeping.
    """

    def __init__(self, bounds: ScalingBounds, behaviour: ScaleBehaviour, initial: int | None = None) -> None:
        self.bounds = bounds
        self.behaviour = behaviour
        self.target = bounds.workers_min if initial is None else initial
        self._history: deque[tuple[float, int]] = deque()  # (at, recommendation)
        self._changes: deque[tuple[float, int]] = deque()  # (at, delta) of past scale events
        self._last_active: float | None = None

    def decide(self, now: float, lag: int, partitions: int) -> ScaleDecision:
        b = self.bounds
        previous = self.target
        active = is_active(lag, b)
        if active or self._last_active is None:  # a fresh scaler waits one cooldown before 1 -> 0
            self._last_active = now
        recommended = desired_workers(lag, partitions, b)
        if b.workers_min == 0 and previous == 0:
            # KEDA itself activates a tier at zero (the HPA does not run at 0 replicas)
            target, reason = (1, "activated") if recommended > 0 else (0, "idle")
            self._history.clear()
        elif b.workers_min == 0 and recommended == 0:
            # KEDA deactivates only after cooldownPeriod without activity; until then the HPA keeps >= 1
            if now - self._last_active >= self.behaviour.cooldown_s:
                target, reason = 0, "deactivated after cooldown"
                self._history.clear()
            else:
                self._record(now, 1)
                target, reason = self._stabilised(now, previous, 1)
                reason = "cooldown" if target == 1 else reason
        else:
            self._record(now, recommended)
            target, reason = self._stabilised(now, previous, recommended)
        target = min(target, worker_cap(b, partitions))
        if target != previous:
            self._changes.append((now, target - previous))
        longest = max(self.behaviour.scale_up_period_s, self.behaviour.scale_down_period_s)
        while self._changes and now - self._changes[0][0] >= longest:
            self._changes.popleft()
        self.target = target
        return ScaleDecision(lag, partitions, active, recommended, target, previous, reason)

    # ---- the HPA's algorithm (pkg/controller/podautoscaler: stabilizeRecommendationWithBehaviors,
    # ---- convertDesiredReplicasWithBehaviorRate) --------------------------------------------------
    def _record(self, now: float, recommendation: int) -> None:
        self._history.append((now, recommendation))
        keep = max(self.behaviour.scale_up_window_s, self.behaviour.scale_down_window_s)
        while self._history and now - self._history[0][0] > keep:
            self._history.popleft()

    def _stabilised(self, now: float, current: int, recommended: int) -> tuple[int, str]:
        h = self.behaviour
        up = min([r for at, r in self._history if now - at <= h.scale_up_window_s] + [recommended])
        down = max([r for at, r in self._history if now - at <= h.scale_down_window_s] + [recommended])
        stable = current
        if stable < up:
            stable = up
        if stable > down:
            stable = down
        limited = self._rate_limited(now, current, stable)
        if limited != stable:
            return limited, "rate policy"
        return stable, "recommended" if stable == recommended else "stabilisation window"

    def _rate_limited(self, now: float, current: int, wanted: int) -> int:
        h = self.behaviour
        if wanted > current:
            added = sum(d for at, d in self._changes if d > 0 and now - at < h.scale_up_period_s)
            removed = -sum(d for at, d in self._changes if d < 0 and now - at < h.scale_up_period_s)
            limit = current - added + removed + h.scale_up_pods
            return max(current, min(wanted, limit))
        if wanted < current:
            added = sum(d for at, d in self._changes if d > 0 and now - at < h.scale_down_period_s)
            removed = -sum(d for at, d in self._changes if d < 0 and now - at < h.scale_down_period_s)
            limit = current - added + removed - h.scale_down_pods
            return min(current, max(wanted, limit))
        return current
