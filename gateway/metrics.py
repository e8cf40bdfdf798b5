"""Gateway Prometheus metrics: requests by route template, status and tier, and latency."""

from __future__ import annotations

import time

from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "lotabots_http_requests_total", "HTTP requests handled", ["route", "method", "status", "tier"]
)
HTTP_LATENCY = Histogram(
    "lotabots_http_request_seconds", "HTTP request latency", ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


_children: dict[tuple[str, str, str, str], tuple[object, object]] = {}


def observe_request(route: str, method: str, status: int, tier: str, seconds: float) -> None:
    _observe(route, method, str(status), tier, seconds)


def _observe(route: str, method: str, status: str, tier: str, seconds: float) -> None:
    key = (route, method, status, tier)
    pair = _children.get(key)
    if pair is None:  # labels() costs a lock and a dict walk: do it once per label set
        pair = _children[key] = (HTTP_REQUESTS.labels(route, method, status, tier), HTTP_LATENCY.labels(route, method))
    pair[0].inc()  # type: ignore[attr-defined]
    pair[1].observe(seconds)  # type: ignore[attr-defined]


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the submit hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            state = scope.get("state") or {}
            principal = state.get("principal")
            tier = getattr(principal, "tier", "") if principal else ""
            _observe(template, scope["method"], str(status), tier, time.perf_counter() - start)


def metrics_response() -> PlainTextResponse:
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)
