"""Each gateway replica tails `results.tokens` (no consumer group, from the end) and keeps recent text.

For every request whose chunks it sees, the tail keeps a :class:`LiveText`: the text of the request's
current run (attempt) and the chunk boundaries, so a stream opened or resumed on this replica gets the
same events as a live one. Streams park on the text's ``changed`` future (one wake-up per chunk for all
of a request's streams; no polling). Memory is bounded: least recently touched texts without streams go
first once ``stream_buffer_chars`` is exceeded, and finished ones after ``stream_buffer_linger_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from prometheus_client import Counter, Gauge
from pydantic import TypeAdapter

from lotabots.kafka_io import make_consumer, stop_tail, topic_partitions
from lotabots.settings import Settings
from schemas.events import RequestLifecycleEvent, TokenChunk, TokenChunkBatch
from schemas.topics import TOKEN_STREAM

log = logging.getLogger(__name__)

CHUNKS_SEEN = Counter("lotabots_gateway_token_chunks_total", "token chunks read from the token stream")
TEXTS_HELD = Gauge("lotabots_gateway_stream_texts", "requests whose recent text this gateway holds")
_BATCH = TypeAdapter(TokenChunkBatch)


class LiveText:
    """What this replica knows of one request's generated text (its latest attempt)."""

    __slots__ = ("request_id", "attempt", "start", "parts", "ends", "last_seq", "broken", "previous",
                 "changed", "watchers", "finished_at", "_text")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.attempt: str | None = None
        self.start = 0  # position of the first character held (> 0 when this replica joined late)
        self.parts: list[str] = []  # every chunk's delta, in order
        self.ends: list[int] = []  # end position of every chunk, in order
        self.last_seq = 0
        self.broken = False  # a chunk of this attempt is missing: only the final result completes it
        self.previous: str | None = None  # the attempt before (its late chunks are ignored)
        self.changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watchers = 0
        self.finished_at: float | None = None
        self._text: str | None = ""

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "".join(self.parts)
        return self._text

    def chunk(self, i: int) -> str:
        """The delta of chunk ``i`` (what a stream that has everything before it delivers next)."""
        return self.parts[i]

    @property
    def end(self) -> int:
        return self.ends[-1] if self.ends else self.start

    def slice(self, a: int, b: int) -> str | None:
        """Characters [a, b) of the attempt's text, or None when this replica does not hold them."""
        if a < self.start or b > self.end or a > b:
            return None
        return self.text[a - self.start:b - self.start]

    def apply(self, chunk: TokenChunk) -> bool:
        """Add one chunk; True if the text changed (or broke)."""
        if chunk.attempt != self.attempt:
            if chunk.attempt == self.previous:
                return False  # a late chunk of a run that was taken over
            self.previous, self.attempt = self.attempt, chunk.attempt
            self.start, self.parts, self.ends, self._text = chunk.position, [], [], ""
            self.last_seq, self.broken = chunk.seq - 1, False
        if self.broken or chunk.seq <= self.last_seq:
            return False  # duplicate
        if chunk.seq != self.last_seq + 1 or chunk.position != self.end:
            self.broken = True
            return True
        self.parts.append(chunk.delta)
        self._text = None
        self.ends.append(chunk.position + len(chunk.delta))
        self.last_seq = chunk.seq
        return True

    def notify(self) -> None:
        changed, self.changed = self.changed, asyncio.get_running_loop().create_future()
        if not changed.done():
            changed.set_result(None)


class TokenStreamTail:
    """Tails the token stream into :class:`LiveText` per request; streams watch them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._texts: OrderedDict[str, LiveText] = OrderedDict()
        self._chars = 0
        self._task: asyncio.Task[None] | None = None
        self._last_sweep = time.monotonic()

    async def start(self) -> None:
        # the broker answers a parked fetch as soon as a chunk lands: the default wait costs no latency
        self._consumer = make_consumer(self.settings, group_id=None, client_id="gateway-token-tail")
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, TOKEN_STREAM)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now, so chunks produced after start() are seen
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name="token-tail")

    async def stop(self) -> None:
        await stop_tail(self._task, self._consumer)

    # ---- what streams call --------------------------------------------------------------------
    def watch(self, request_id: str) -> LiveText:
        live = self._get(request_id)
        live.watchers += 1
        return live

    def unwatch(self, live: LiveText) -> None:
        live.watchers -= 1
        if live.watchers == 0 and live.attempt is None and self._texts.get(live.request_id) is live:
            del self._texts[live.request_id]  # watched, never streamed (No AI, a remote backend, ...)

    def on_result(self, event: RequestLifecycleEvent) -> None:
        """A `results` listener: a settled request's text lingers a while for replays, then goes."""
        if event.type.status.rank < 2:
            return
        live = self._texts.get(event.request_id)
        if live is not None:
            live.finished_at = time.monotonic()
            live.notify()

    # ---- the tail -----------------------------------------------------------------------------
    def _get(self, request_id: str) -> LiveText:
        live = self._texts.get(request_id)
        if live is None:
            live = self._texts[request_id] = LiveText(request_id)
        else:
            self._texts.move_to_end(request_id)
        return live

    async def _run(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("token tail poll failed")
                await asyncio.sleep(1)
                continue
            touched: dict[str, LiveText] = {}
            for records in batch.values():
                for record in records:
                    try:
                        message = _BATCH.validate_json(record.value or b"")
                    except Exception:
                        continue  # not ours to dead-letter: the stream is advisory, results is the truth
                    for chunk in message.chunks:
                        live = self._get(chunk.request_id)
                        before = live.end - live.start
                        if live.apply(chunk):
                            touched[chunk.request_id] = live
                        self._chars += (live.end - live.start) - before
                    CHUNKS_SEEN.inc(len(message.chunks))
            for live in touched.values():  # one wake-up per request per poll, however many chunks came
                live.notify()
            self._evict()

    def _evict(self) -> None:
        now = time.monotonic()
        linger = self.settings.stream_buffer_linger_s
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            for rid in [r for r, t in self._texts.items()
                        if t.watchers == 0 and t.finished_at is not None and now - t.finished_at >= linger]:
                self._drop(rid)
        if self._chars > self.settings.stream_buffer_chars:
            for rid in [r for r, t in self._texts.items() if t.watchers == 0]:
                self._drop(rid)
                if self._chars <= self.settings.stream_buffer_chars * 0.9:
                    break
        TEXTS_HELD.set(len(self._texts))

    def _drop(self, request_id: str) -> None:
        live = self._texts.pop(request_id)
        self._chars -= live.end - live.start
