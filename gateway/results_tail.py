"""Each gateway replica tails `results` (no consumer group, from the end) to learn when requests end.

Long-poll waiters park on an asyncio.Event per request id (no polling loop per client); other parts of
the gateway (concurrency limits, quota settlement) subscribe to lifecycle events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lotabots.kafka_io import decode, make_consumer, stop_tail, topic_partitions
from lotabots.settings import Settings
from schemas.events import RequestLifecycleEvent
from schemas.topics import RESULTS

log = logging.getLogger(__name__)

Listener = Callable[[RequestLifecycleEvent], Awaitable[None] | None]


class ResultsTail:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._waiters: dict[str, list[asyncio.Future[RequestLifecycleEvent]]] = {}
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        self._consumer = make_consumer(self.settings, group_id=None, client_id="gateway-results-tail")
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, RESULTS)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now, so events produced after start() are seen
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name="results-tail")

    async def stop(self) -> None:
        await stop_tail(self._task, self._consumer)

    def waiter(self, request_id: str) -> asyncio.Future[RequestLifecycleEvent]:
        """A future resolved with the request's next terminal (or awaiting_approval) event."""
        fut: asyncio.Future[RequestLifecycleEvent] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(request_id, []).append(fut)
        return fut

    def discard(self, request_id: str, fut: asyncio.Future[RequestLifecycleEvent]) -> None:
        futs = self._waiters.get(request_id)
        if futs and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._waiters[request_id]

    async def _run(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("results tail poll failed")
                await asyncio.sleep(1)
                continue
            for records in batch.values():
                for record in records:
                    try:
                        event = decode(RequestLifecycleEvent, record.value)
                    except Exception:
                        continue
                    await self._dispatch(event)

    async def _dispatch(self, event: RequestLifecycleEvent) -> None:
        if event.type.status.rank >= 2:
            for fut in self._waiters.pop(event.request_id, []):
                if not fut.done():
                    fut.set_result(event)
        for listener in self._listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("results listener failed")
