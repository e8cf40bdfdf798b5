"""`/healthz`, `/readyz` and `/metrics` for every HTTP service (gateway, auth, usage)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from gateway.metrics import metrics_response


def _ready_flag(request: Request) -> bool:
    return bool(getattr(request.app.state, "ready", False))


def install_health_routes(app: FastAPI, ready: Callable[[Request], bool] = _ready_flag) -> None:
    """Liveness, readiness (`ready(request)`, by default `app.state.ready`) and Prometheus metrics."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> PlainTextResponse:
        ok = ready(request)
        return PlainTextResponse("ready" if ok else "starting", status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return metrics_response()
