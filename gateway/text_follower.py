"""Following one request's output as it is generated: the events every streaming route renders.

:func:`follow_output` turns what the replica knows (the token tail's :class:`LiveText`, the `results`
tail, the stored row) into a sequence of :class:`Delta`, :class:`Restart`, :class:`KeepAlive` and one
final :class:`Done`. Positions are characters of output text: a delta's ``end`` is the text position
after it, so any replica, and the stored result of a finished request, can resume "after position N"
exactly — no gap, no duplicate — without having seen the earlier chunks.

A run taken over by another worker (its first worker died) starts a new attempt. When the new attempt's
text agrees with what this stream already delivered (greedy decoding, or sampling with a seed), the
stream just goes on; when it differs, the stream says :class:`Restart` and delivers the new text from
position 0. The final result settles everything: the deltas always add up to its text.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.long_poll import overlay
from gateway.request_models import request_resource
from gateway.results_tail import ResultsTail
from gateway.token_stream import LiveText, TokenStreamTail
from schemas.events import RequestStatus


@dataclass(frozen=True)
class Delta:
    end: int  # text position after this delta
    text: str


@dataclass(frozen=True)
class Restart:
    reason: str = "generation_restarted"


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class Done:
    resource: dict[str, Any]


StreamItem = Delta | Restart | KeepAlive | Done


def settled(resource: dict[str, Any]) -> bool:
    """Terminal, or waiting for a human (the stream of a draft ends there too)."""
    return RequestStatus(resource["status"]).rank >= 2


async def follow_output(
    tokens: TokenStreamTail, results: ResultsTail, load_row: Callable[[], Awaitable[Any]],
    resource: dict[str, Any], after: int = 0, keepalive_s: float = 15.0,
) -> AsyncIterator[list[StreamItem]]:
    """The request's output from text position ``after`` on, ending with :class:`Done`; the items that
    became known together come as one list (one write to the client).

    ``resource`` is the request as just read (the caller has checked it exists and is the tenant's).
    """
    request_id = resource["id"]
    live = tokens.watch(request_id)
    outcome = results.waiter(request_id)
    follower = _Follower(live, after)
    # One future to park on, however the stream is woken: a chunk (the tail notifies the text), the
    # request settling (the outcome's callback), or the keep-alive tick; a spurious wake-up (another
    # stream's tick on the same text) costs a look. The future is shared by every stream of the text:
    # it is awaited through a shield, or a cancelled stream (its client left) would cancel it for all.
    loop = asyncio.get_running_loop()
    ticked = False

    def tick() -> None:
        nonlocal ticked, timer
        ticked = True
        live.notify()
        timer = loop.call_later(keepalive_s, tick)

    outcome.add_done_callback(lambda _: live.notify())
    timer = loop.call_later(keepalive_s, tick)
    try:
        if not settled(resource):  # the row was read before parking: read once more
            resource = request_resource(await load_row())
        if not settled(resource):
            while True:
                items = follower.take()
                if ticked:
                    ticked = False
                    items.append(KeepAlive())
                if items:
                    yield items
                if outcome.done():
                    resource = overlay(request_resource(await load_row()), outcome.result())
                    break
                await asyncio.shield(live.changed)
        yield [*follower.finish(((resource.get("output") or {}).get("text")) or ""), Done(resource)]
    finally:
        timer.cancel()
        results.discard(request_id, outcome)
        tokens.unwatch(live)


class _Follower:
    """What one stream has delivered and what it may deliver next."""

    def __init__(self, live: LiveText, after: int) -> None:
        self.live = live
        self.after = after  # the client had [0, after) before this stream
        self.sent = after
        self.shown: list[str] = []  # what this stream delivered: [after, sent)
        self.attempt: str | None = None
        self.next_chunk = 0  # index into live.ends of the first chunk this stream has not delivered

    def _shown(self) -> str:
        return "".join(self.shown)

    def _deliver(self, end: int, text: str) -> Delta:
        self.shown.append(text)
        self.sent = end
        return Delta(end, text)

    def _restart(self) -> Restart:
        self.after = self.sent = 0
        self.shown = []
        return Restart()

    def take(self) -> list[StreamItem]:
        live, out = self.live, []
        if live.attempt is None or live.broken:
            return out
        if self.attempt != live.attempt:
            if self.attempt is not None:  # taken over: go on only where the new run agrees
                if live.end < self.sent:
                    return out  # not there yet
                theirs = live.slice(self.after, self.sent)
                if theirs is not None and theirs != self._shown():
                    out.append(self._restart())
            self.attempt = live.attempt
        if not (live.start <= self.sent < live.end):
            return out
        ends = live.ends  # the live chunk boundaries, so a resume repeats the same events
        i = self.next_chunk
        if i >= len(ends) or (i and ends[i - 1] != self.sent) or ends[i] <= self.sent:
            i = bisect.bisect_right(ends, self.sent)  # first look, a new attempt, or after a restart
        for k in range(i, len(ends)):
            start = ends[k - 1] if k else live.start
            text = live.chunk(k) if start == self.sent else live.slice(self.sent, ends[k])
            assert text is not None
            out.append(self._deliver(ends[k], text))
        self.next_chunk = len(ends)
        return out

    def finish(self, final: str) -> list[StreamItem]:
        out: list[StreamItem] = []
        if final[self.after:self.sent] != self._shown():
            out.append(self._restart())  # what was streamed is not how it ended
        live = self.live
        consistent = (live.attempt is not None and self.attempt in (None, live.attempt) and not live.broken
                      and live.slice(live.start, live.end) == final[live.start:live.end])
        if consistent and live.start <= self.sent:
            for end in live.ends:
                if self.sent < end <= len(final):
                    out.append(self._deliver(end, final[self.sent:end]))
        if self.sent < len(final):
            out.append(self._deliver(len(final), final[self.sent:]))
        return out
