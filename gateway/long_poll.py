"""Long-poll: hold a response until the request is terminal (or awaiting approval) or N seconds pass.

Waiters park on a future that the gateway's `results` tail resolves (no polling loop per client). The
lifecycle event can arrive before the result writer stored it, so the answer overlays the event on
the stored row: the client never sees an older state than the one that woke it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from gateway.request_models import request_resource
from gateway.results_tail import ResultsTail
from schemas.autonomy_levels import AutonomyLevel, split_suggestions
from schemas.events import RequestLifecycleEvent, RequestStatus

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.I)


def prefer_wait(header: str | None) -> float | None:
    """The N of an RFC 7240 `Prefer: wait=N` header, if any."""
    if not header:
        return None
    m = _PREFER_WAIT.search(header)
    return float(m.group(1)) if m else None


def overlay(resource: dict[str, Any], event: RequestLifecycleEvent) -> dict[str, Any]:
    """The resource as it will be once the writer has applied `event` (if `event` is newer)."""
    status = event.type.status
    if RequestStatus(resource["status"]).rank >= status.rank:
        return resource
    out = dict(resource)
    out["status"] = status.value
    if status.rank >= 2:
        if event.output is not None or event.finish_reason:
            out["output"] = {"text": event.output, "finish_reason": event.finish_reason}
        if event.error_code:
            out["error"] = {"code": event.error_code, "message": event.error_message}
        if event.prompt_tokens is not None:
            completion = event.completion_tokens or 0
            out["usage"] = {"prompt_tokens": event.prompt_tokens, "completion_tokens": completion,
                            "total_tokens": event.prompt_tokens + completion}
        timings = dict(out.get("timings") or {})
        for name in ("started_at", "first_token_at", "finished_at"):
            value = getattr(event, name)
            if value is not None and not timings.get(name):
                timings[name] = value.isoformat()
        out["timings"] = _durations(timings)
        autonomy = out.get("autonomy")
        if autonomy and autonomy.get("level") == AutonomyLevel.ASSISTED.value:  # suggestions come from the output
            out["autonomy"] = {**autonomy, "suggestions": split_suggestions(event.output)}
    return out


def _durations(timings: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime

    def at(name: str) -> datetime | None:
        value = timings.get(name)
        if not value:
            return None
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # SQLite returns naive UTC

    created, started, finished = at("created_at"), at("started_at"), at("finished_at")
    if created and started:
        timings["queue_ms"] = round((started - created).total_seconds() * 1000, 1)
    if started and finished:
        timings["run_ms"] = round((finished - started).total_seconds() * 1000, 1)
    return timings


async def wait_for_outcome(tail: ResultsTail, load_row: Any, request_id: str, seconds: float) -> dict[str, Any]:
    """Return the request resource once it is settled or after `seconds`, whichever is first.

    `load_row` is an async callable returning the current row (tenant-scoped by the caller).
    """
    fut = tail.waiter(request_id)  # park first, then read: an event between the two is not missed
    try:
        resource = request_resource(await load_row())
        if RequestStatus(resource["status"]).rank >= 2 or seconds <= 0:
            return resource
        try:
            event = await asyncio.wait_for(asyncio.shield(fut), timeout=seconds)
        except TimeoutError:
            return request_resource(await load_row())
        return overlay(request_resource(await load_row()), event)
    finally:
        tail.discard(request_id, fut)
