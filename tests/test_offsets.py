"""Commit-after-effect: only the contiguous done prefix of a partition is ever committed."""

from aiokafka import TopicPartition

from consumers.offsets import OffsetTracker

TP = TopicPartition("requests.pro", 0)


def test_out_of_order_completion_commits_only_the_done_prefix() -> None:
    t = OffsetTracker()
    for o in (10, 11, 12):
        t.begin(TP, o)
    t.done(TP, 11)
    t.done(TP, 12)
    assert t.committable() == {TP: 10}  # 10 still running: nothing past it may be committed
    t.mark_committed({TP: 10})
    t.done(TP, 10)
    assert t.committable() == {TP: 13}
    t.mark_committed({TP: 13})
    assert t.committable() == {}


def test_revoked_partitions_are_forgotten() -> None:
    t = OffsetTracker()
    t.begin(TP, 5)
    t.forget({TP})
    assert t.committable() == {}
    assert t.in_flight(TP) == 0
