"""The usage service (`lotabots serve usage`): owns ClickHouse, sinks ``usage.billable`` into it, serves reads.

One process, because chDB lets only one process open its data directory: the sink (consumers/usage_sink.py)
and the read API share the engine through separate sessions. The gateway calls the read API over HTTP
(settings.usage_url); it is internal (bind it to loopback or a private network, and set
``LOTABOTS_USAGE_SERVICE_TOKEN`` to require a bearer token).

Routes: ``GET /internal/v1/usage``, ``GET /internal/v1/invoices``, ``POST /internal/v1/sql``, plus
``/healthz``, ``/readyz`` and ``/metrics``. Pending ClickHouse migrations are applied at start-up.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from consumers.usage_reads import UsageQueryError, invoices, usage_summary
from consumers.usage_sink import UsageSink
from consumers.usage_sql import run_finance_sql
from consumers.usage_writer import WRITER_SESSION, UsageWriter
from gateway.health import install_health_routes
from lotabots.clickhouse import finance_session_settings, open_clickhouse
from lotabots.runners import settle_heap
from lotabots.settings import Settings, get_settings
from lotabots.usage_metrics import USAGE_QUERIES

log = logging.getLogger(__name__)
T = TypeVar("T")


class SqlBody(BaseModel):
    sql: str = Field(min_length=1, max_length=20_000)
    tenant_id: str | None = Field(default=None, description="scope to one tenant; null = all (platform finance)")


class UsageBackend:
    """The ClickHouse sessions of the service and the threads they run on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.write_thread = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-write")
        self.read_threads = ThreadPoolExecutor(2, thread_name_prefix="clickhouse-read")

    async def open(self) -> None:
        from lotabots.tiers import get_tier_config
        from schemas.clickhouse.migrate import migrate_clickhouse

        def open_all() -> None:
            self.writer_client = open_clickhouse(self.settings, session_settings=WRITER_SESSION)
            report = migrate_clickhouse(self.writer_client, get_tier_config(), server=False)
            for line in report.lines():
                log.info("clickhouse: %s", line)
            self.reader = open_clickhouse(self.settings)

        await asyncio.get_running_loop().run_in_executor(self.write_thread, open_all)
        self.writer = UsageWriter(self.writer_client)

    def finance_session(self, extra: dict[str, Any], limits: bool = True) -> Any:
        session = {**extra, **finance_session_settings(self.settings, limits=limits)}
        return open_clickhouse(self.settings, session_settings=session)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.read_threads, fn, *args)

    def close(self) -> None:
        for name in ("reader", "writer_client"):
            client = getattr(self, name, None)
            if client is not None:
                client.close()
        self.write_thread.shutdown(wait=True)
        self.read_threads.shutdown(wait=True)


def create_usage_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = UsageBackend(settings)
        await backend.open()
        stopping = asyncio.Event()
        app.state.backend = backend
        task = asyncio.create_task(_keep_sinking(app, settings, backend, stopping), name="usage-sink")
        app.state.sink_task = task
        settle_heap()
        try:
            yield
        finally:
            stopping.set()
            if getattr(app.state, "sink", None) is not None:
                app.state.sink.request_stop()
            try:
                await asyncio.wait_for(task, 30)
            except Exception:
                log.exception("usage sink did not stop cleanly")
            backend.close()

    app = FastAPI(title="LotaBots usage service", lifespan=lifespan)

    @app.exception_handler(UsageQueryError)
    async def _refused(_: Request, exc: UsageQueryError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    async def authorised(request: Request) -> None:
        token = settings.usage_service_token
        if token is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise UsageQueryError(401, "unauthenticated", "the usage service needs its bearer token")

    internal = APIRouter(prefix="/internal/v1", dependencies=[Depends(authorised)])

    @internal.get("/usage")
    async def usage(
        request: Request, tenant_id: Annotated[str, Query(min_length=1, max_length=200)],
        start: date, end: date, group_by: str = "day",
    ) -> dict[str, Any]:
        dims = [g.strip() for g in group_by.split(",") if g.strip()]
        backend: UsageBackend = request.app.state.backend
        return await _counted("usage", backend.read(usage_summary, backend.reader, tenant_id, start, end, dims))

    @internal.get("/invoices")
    async def billing_invoices(
        request: Request, period: str, tenant_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        backend: UsageBackend = request.app.state.backend
        return await _counted("invoices", backend.read(invoices, backend.reader, period, tenant_id))

    @internal.post("/sql")
    async def finance_sql(request: Request, body: Annotated[SqlBody, Body()]) -> dict[str, Any]:
        backend: UsageBackend = request.app.state.backend
        result = await _counted("sql", backend.read(run_finance_sql, body.sql, backend.finance_session,
                                                    body.tenant_id))
        return result.as_json()

    app.include_router(internal)

    install_health_routes(app, ready=_sink_ready)

    return app


def _sink_ready(request: Request) -> bool:
    sink: UsageSink | None = getattr(request.app.state, "sink", None)
    task = getattr(request.app.state, "sink_task", None)
    return sink is not None and sink.ready.is_set() and task is not None and not task.done()


async def _keep_sinking(app: FastAPI, settings: Settings, backend: UsageBackend, stopping: asyncio.Event) -> None:
    """Run the sink; if it fails (broker gone, ...), start a fresh one: the offsets say where to resume."""
    delay = 1.0
    while not stopping.is_set():
        sink = UsageSink(settings, backend.writer, backend.write_thread)
        app.state.sink = sink
        try:
            await sink.run()
            return
        except Exception:
            log.exception("usage sink failed; restarting in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def _counted(endpoint: str, work: Any) -> Any:
    try:
        result = await work
    except UsageQueryError:
        USAGE_QUERIES.labels(endpoint, "refused").inc()
        raise
    USAGE_QUERIES.labels(endpoint, "ok").inc()
    return result


def run_usage_service(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    import uvicorn

    uvicorn.run(create_usage_app(settings), host=host or settings.usage_host, port=port or settings.usage_port,
                log_config=None, access_log=False, timeout_graceful_shutdown=30)
    return 0
