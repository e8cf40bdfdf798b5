"""Publishing generated text to `results.tokens` as it is decoded (token streaming, docs/openai.md).

The batch scheduler hands over every sequence's new text once per engine step (engine thread); this
publisher groups one step's deltas by the partition each request id hashes to and sends one message per
partition (`TokenChunkBatch`), in step order, from one sender task. Chunks are best effort: a lost chunk
costs a client progressive display, never text — the terminal event on `results` carries the full output
and the gateway completes every stream from it. So sends are not awaited and failures are only counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from prometheus_client import Counter

from inference.scheduler import TokenDelta
from schemas.events import TokenChunkBatch
from schemas.topics import TOKEN_STREAM

log = logging.getLogger(__name__)

CHUNKS = Counter("lotabots_token_chunks_total", "text deltas published to the token stream", ["tier"])
MESSAGES = Counter("lotabots_token_messages_total", "token stream messages (one per partition per step)", ["tier"])
FAILED = Counter("lotabots_token_messages_failed_total", "token stream messages the broker refused", ["tier"])


class TokenPublisher:
    """Sends each engine step's deltas; ``attempt_of`` names the run a request id belongs to (None: skip)."""

    def __init__(self, producer: AIOKafkaProducer, worker: str, tier: str,
                 attempt_of: Callable[[str], str | None]) -> None:
        self.producer = producer
        self.worker = worker
        self.tier = tier
        self.attempt_of = attempt_of
        self._queue: asyncio.Queue[list[TokenDelta]] = asyncio.Queue()
        self._partitions = 1
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._partitions = len(await self.producer.partitions_for(TOKEN_STREAM)) or 1
        self._task = asyncio.create_task(self._run(), name="token-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def publish_from_engine(self, loop: asyncio.AbstractEventLoop) -> Callable[[list[TokenDelta]], None]:
        """The scheduler's ``on_tokens`` callback (runs on the engine thread)."""
        def on_tokens(deltas: list[TokenDelta]) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, deltas)
        return on_tokens

    async def _run(self) -> None:
        while True:
            deltas = await self._queue.get()
            try:
                await self._send_step(deltas)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("publishing token chunks failed", exc_info=True)

    async def _send_step(self, deltas: list[TokenDelta]) -> None:
        groups: dict[int, list[dict[str, object]]] = {}
        for d in deltas:
            attempt = self.attempt_of(d.seq_id)
            if attempt is None:  # finished or handed back meanwhile
                continue
            partition = (murmur2(d.seq_id.encode()) & 0x7FFFFFFF) % self._partitions  # the key's partition
            groups.setdefault(partition, []).append({
                "request_id": d.seq_id, "attempt": attempt, "seq": d.index, "position": d.position,
                "delta": d.text, "tokens": d.tokens,
            })
        for partition, chunks in groups.items():
            value = orjson.dumps({"schema_version": TokenChunkBatch.SCHEMA_VERSION, "worker": self.worker,
                                  "chunks": chunks})
            ack = await self.producer.send(TOKEN_STREAM, value, key=str(chunks[0]["request_id"]).encode(),
                                           partition=partition)
            ack.add_done_callback(self._count_failure)
            MESSAGES.labels(self.tier).inc()
            CHUNKS.labels(self.tier).inc(len(chunks))

    def _count_failure(self, ack: asyncio.Future[object]) -> None:
        if not ack.cancelled() and ack.exception() is not None:
            FAILED.labels(self.tier).inc()
