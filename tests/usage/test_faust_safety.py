"""The two Faust guards of streams/faust_safety.py, on Faust's own consumer and recovery code."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from lotabots.settings import Settings
from lotabots.tiers import get_tier_config
from streams.faust_safety import GuardedConsumer, OrderedRecovery, head_is_unacked

EVENTS_7 = TP("usage.events", 7)


def _consumer(cls: type, committed: int, acked: list[int], gap: tuple[int, int] | None = None) -> Any:
    """A consumer with only the bookkeeping ``_new_offset`` reads (no broker, no app)."""
    consumer = object.__new__(cls)
    consumer._committed_offset = defaultdict(lambda: None, {EVENTS_7: committed})
    consumer._acked = defaultdict(list, {EVENTS_7: list(acked)})
    consumer._acked_index = defaultdict(set, {EVENTS_7: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    if gap is not None:
        consumer._gap[EVENTS_7].addi(*gap)
    return consumer


def test_faust_alone_commits_over_a_single_unacked_head_and_the_guard_does_not() -> None:
    # the state the billing test left: 143 (the committed offset) never acked, 144..157 acked
    assert _consumer(faust_aiokafka.Consumer, 143, list(range(144, 158)))._new_offset(EVENTS_7) == 158
    guarded = _consumer(GuardedConsumer, 143, list(range(144, 158)))
    assert guarded._new_offset(EVENTS_7) is None
    guarded._acked[EVENTS_7].append(143)  # once 143 is acked, the whole run commits
    assert guarded._new_offset(EVENTS_7) == 158


def test_the_guard_lets_contiguous_runs_and_known_gaps_commit() -> None:
    assert _consumer(GuardedConsumer, 143, [143, 144, 146])._new_offset(EVENTS_7) == 145
    # a gap Faust recorded (offsets it will never see) counts as handled, as in Faust
    assert _consumer(GuardedConsumer, 143, [145, 146], gap=(143, 145))._new_offset(EVENTS_7) == 147


def test_head_is_unacked_is_false_without_a_commit_or_acks() -> None:
    assert head_is_unacked(None, [5, 6], lambda _: False) is False  # nothing committed yet: Faust decides
    assert head_is_unacked(5, [], lambda _: False) is False
    assert head_is_unacked(5, [5, 6], lambda _: False) is False
    assert head_is_unacked(5, [6], lambda _: False) is True
    assert head_is_unacked(5, [6], lambda offset: offset == 5) is False


class _Consumer:
    def __init__(self) -> None:
        self.flow_active = True

    def stop_flow(self) -> None:
        self.flow_active = False


@pytest.mark.parametrize("step", ["on_recovery_completed", "_resume_streams"])
async def test_recovery_stops_the_flow_before_faust_resumes_the_stream_partitions(
    monkeypatch: pytest.MonkeyPatch, step: str,
) -> None:
    seen: list[bool] = []

    async def faust_step(self: Recovery, generation_id: int = 0) -> None:
        # Faust's step resumes the stream partitions first, seeks after: nothing may flow until then
        seen.append(self.app.consumer.flow_active)

    monkeypatch.setattr(Recovery, step, faust_step)
    recovery = object.__new__(OrderedRecovery)
    recovery.__dict__["app"] = SimpleNamespace(consumer=_Consumer())
    await getattr(recovery, step)(3)
    assert seen == [False]


def test_the_usage_app_runs_with_both_guards() -> None:
    from streams.app import build_usage_app

    stream = build_usage_app(Settings(), get_tier_config())
    assert type(stream.app.transport).Consumer is GuardedConsumer
    assert isinstance(stream.app.tables.recovery, OrderedRecovery)
