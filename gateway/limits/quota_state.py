"""Each gateway replica reads the compacted ``usage.quota-state`` from the beginning and keeps, per tenant,
the committed token usage the Faust app has counted (:class:`schemas.usage.QuotaState`): per day and month
the latest period's count, never lowered by a stale record (see `_later_or_larger`).

`start()` returns once the replica has caught up with the end offsets it saw at start (or after
`settings.quota_state_catch_up_s`), so a replica is not ready before it knows who is over quota; after
that a background task follows the topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

from aiokafka import TopicPartition

from lotabots.kafka_io import decode, make_consumer, stop_tail, topic_partitions
from lotabots.settings import Settings
from schemas.topics import USAGE_QUOTA_STATE
from schemas.usage import QuotaState

log = logging.getLogger(__name__)


class CommittedUsage(NamedTuple):
    """A tenant's tokens counted by the Faust app, for the day and month they were counted in."""

    day: str
    month: str
    tokens_day: int
    tokens_month: int

    def for_periods(self, day: str, month: str) -> tuple[int, int]:
        """Tokens of `day` and `month`: a state of an earlier period counts nothing for a later one."""
        return (self.tokens_day if self.day == day else 0, self.tokens_month if self.month == month else 0)


class QuotaStateTail:
    """The latest committed usage per tenant, from ``usage.quota-state``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._latest: dict[str, CommittedUsage] = {}
        self._consumer = make_consumer(settings, group_id=None, client_id="gateway-quota-state")
        self._task: asyncio.Task[None] | None = None
        self.caught_up = False

    def committed(self, tenant_id: str) -> CommittedUsage | None:
        return self._latest.get(tenant_id)

    async def start(self) -> None:
        await self._consumer.start()
        deadline = time.monotonic() + self.settings.quota_state_catch_up_s
        tps = await self._partitions(deadline)
        if tps:
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            ends = await self._consumer.end_offsets(tps)
            while time.monotonic() < deadline:
                if await self._reached(ends):
                    self.caught_up = True
                    break
                await self._poll(200)
            if not self.caught_up:
                log.warning("quota state: not caught up with %s after %.0fs; enforcing from what was read",
                            USAGE_QUOTA_STATE, self.settings.quota_state_catch_up_s)
        else:
            log.warning("quota state: topic %s not found; token quotas count this gateway's usage only",
                        USAGE_QUOTA_STATE)
        self._task = asyncio.create_task(self._run(assigned=bool(tps)), name="quota-state-tail")

    async def stop(self) -> None:
        await stop_tail(self._task, self._consumer)

    async def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def _partitions(self, deadline: float) -> list[TopicPartition]:
        return await topic_partitions(self._consumer, USAGE_QUOTA_STATE, max(0.0, deadline - time.monotonic()))

    async def _run(self, *, assigned: bool) -> None:
        while True:
            try:
                if not assigned:  # the topic appeared after start: read it from the beginning
                    tps = await self._partitions(time.monotonic() + 5)
                    if not tps:
                        await asyncio.sleep(5)
                        continue
                    self._consumer.assign(tps)
                    await self._consumer.seek_to_beginning(*tps)
                    assigned = True
                await self._poll(1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("quota state tail poll failed")
                await asyncio.sleep(1)

    async def _poll(self, timeout_ms: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            for record in records:
                self.apply(record.key, record.value)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the compacted topic: the tenant's latest state, or a tombstone."""
        if value is None:
            if key is not None:
                self._latest.pop(key.decode(), None)
            return
        try:
            state = decode(QuotaState, value)
        except Exception:
            log.warning("quota state: skipping an undecodable record (key %r)", key)
            return
        counted = CommittedUsage(state.day, state.month, state.tokens_day, state.tokens_month)
        held = self._latest.get(state.tenant_id)
        self._latest[state.tenant_id] = counted if held is None else _later_or_larger(held, counted)


def _later_or_larger(held: CommittedUsage, counted: CommittedUsage) -> CommittedUsage:
    """Per period, the later period's count, and of one period the larger: a period's count only grows.

    A lower count of the same day (or a record naming an earlier day) is stale: a Faust worker that lost
    its partitions in a rebalance publishing after the new owner, or one replaying from an older checkpoint.
    Taking it would let the tenant overshoot. Only a tombstone forgets a tenant's counts.
    """
    day, tokens_day = max((held.day, held.tokens_day), (counted.day, counted.tokens_day))  # ISO labels sort
    month, tokens_month = max((held.month, held.tokens_month), (counted.month, counted.tokens_month))
    return CommittedUsage(day, month, tokens_day, tokens_month)
