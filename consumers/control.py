"""Tails `requests.control` (every worker reads all of it, no group) and remembers recent cancels."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lotabots.kafka_io import decode, make_consumer, stop_tail, topic_partitions
from lotabots.settings import Settings
from schemas.events import ControlAction, ControlSignal
from schemas.topics import REQUESTS_CONTROL

log = logging.getLogger(__name__)


class ControlListener:
    """Cancel signals for this tier; `is_canceled` answers for requests not yet taken from the queue."""

    def __init__(self, settings: Settings, tier: str, on_cancel: Callable[[str], None],
                 lookback_s: float = 24 * 3600) -> None:
        self.settings = settings
        self.tier = tier
        self.on_cancel = on_cancel
        self.lookback_s = lookback_s
        self._canceled: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def is_canceled(self, request_id: str) -> bool:
        return request_id in self._canceled

    async def start(self) -> None:
        self._consumer = make_consumer(self.settings, group_id=None, client_id=f"control-{self.tier}")
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, REQUESTS_CONTROL)
        self._consumer.assign(tps)
        since_ms = int((time.time() - self.lookback_s) * 1000)
        found = await self._consumer.offsets_for_times({tp: since_ms for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            if hit is not None:
                self._consumer.seek(tp, hit.offset)
            else:
                await self._consumer.seek_to_end(tp)
        self._task = asyncio.create_task(self._run(), name="control-listener")

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    try:
                        signal = decode(ControlSignal, record.value)
                    except Exception:
                        log.warning("ignoring malformed control message at %s@%d", record.partition, record.offset)
                        continue
                    if signal.tier != self.tier or signal.action is not ControlAction.CANCEL:
                        continue
                    self._canceled[signal.request_id] = time.monotonic()
                    self.on_cancel(signal.request_id)
            self.ready.set()
            self._expire()

    def _expire(self) -> None:
        if len(self._canceled) < 100_000:
            return
        horizon = time.monotonic() - self.lookback_s
        self._canceled = {k: t for k, t in self._canceled.items() if t >= horizon}

    async def stop(self) -> None:
        await stop_tail(self._task, self._consumer)
