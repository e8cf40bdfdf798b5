"""The gateway ASGI app: wiring only (engine, Kafka producer, verifiers, routers, error handlers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api_keys import ApiKeyVerifier
from gateway.auth.app import auth_routers, start_embedded_auth
from gateway.auth.gateway_wiring import gateway_token_verifier
from gateway.errors import install_error_handlers
from gateway.fast_lane import install_fast_lane
from gateway.health import install_health_routes
from gateway.limits.lifecycle import start_limits, stop_limits
from gateway.metrics import MetricsMiddleware
from gateway.openapi_docs import install_openapi
from gateway.request_service import RequestService
from gateway.responses import JSONBytes
from gateway.results_tail import ResultsTail
from gateway.routers import requests as requests_router
from lotabots.db import make_engine
from lotabots.kafka_io import make_producer
from lotabots.runners import settle_heap
from lotabots.settings import Settings, get_settings
from lotabots.tiers import get_tier_config

# Feature routers beyond requests/auth. Each module exposes `router` (an APIRouter) and may expose
# `async def start(app)` / `async def stop(app)`, run in the lifespan after the core wiring exists.
GATEWAY_COMPONENTS = (
    "gateway.routers.streaming",
    "gateway.routers.openai_models",
    "gateway.routers.openai_chat",
    "gateway.routers.openai_responses",
    "gateway.routers.webhooks",
    "gateway.routers.usage",
    "gateway.routers.autonomy",
    "gateway.routers.console",  # the web console at / (docs/console.md)
    "gateway.routers.dev_mailbox",  # development SMTP's mailbox, loopback only (docs/mailer.md)
)


def _components() -> list:  # type: ignore[type-arg]
    import importlib

    found = []
    for name in GATEWAY_COMPONENTS:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:  # a component not in this build yet
            if exc.name != name:
                raise
    return found


# FastAPI's built-in OpenTelemetry is on by default and costs ~10% of a submit; we export Prometheus
# metrics instead (gateway/metrics.py). Turn it back on by wrapping the app with OTel instrumentation.
NO_OTEL = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        # Large batches (512 KiB, under the broker's 1 MiB message.max.bytes): with a full 16 KiB batch aiokafka makes every further send wait for the drain,
        # which showed up as a tenth of a submit's CPU under load.
        producer = make_producer(settings, client_id="gateway", linger_ms=settings.gateway_linger_ms,
                                 max_batch_size=512 * 1024)
        await producer.start()
        access_tokens = gateway_token_verifier(settings, engine)
        auth = await start_embedded_auth(app, settings, engine, producer) if settings.auth_embedded else None
        # embedded auth: one key cache, so a revoke in this process takes effect at once (not after the TTL)
        api_keys = auth.api_keys if auth is not None else ApiKeyVerifier(engine)

        app.state.settings = settings
        app.state.engine = engine
        app.state.producer = producer
        app.state.api_key_verifier = api_keys
        app.state.credential_verifiers = [api_keys, access_tokens]
        app.state.tiers = get_tier_config()
        app.state.request_service = RequestService(engine, producer, app.state.tiers,
                                                   publish_timeout_s=settings.publish_timeout_s)
        app.state.results_tail = ResultsTail(settings)
        await app.state.results_tail.start()
        await start_limits(app)  # rate limits and token quotas on submits (gateway/limits/)
        started = []
        for component in components:
            if hasattr(component, "start"):
                await component.start(app)
            started.append(component)
        settle_heap()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            for component in reversed(started):
                if hasattr(component, "stop"):
                    await component.stop(app)
            if auth is not None:
                auth.close()
            await access_tokens.aclose()
            await stop_limits(app)
            await app.state.results_tail.stop()
            await producer.stop()
            await engine.dispose()

    app = FastAPI(title="LotaBots gateway", version="1", lifespan=lifespan, default_response_class=JSONBytes,
                  telemetry=NO_OTEL)
    install_error_handlers(app)
    install_fast_lane(app)
    app.add_middleware(MetricsMiddleware)
    app.include_router(requests_router.router)
    components = _components()
    for component in components:
        app.include_router(component.router)
    if settings.auth_embedded:
        for router in auth_routers():
            app.include_router(router)

    install_health_routes(app)
    install_openapi(app)  # docs/openapi.json is this document (`lotabots schemas openapi`)

    return app
