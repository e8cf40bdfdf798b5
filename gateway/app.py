"""The gateway ASGI app: wiring only (engine, Kafka producer, verifiers, routers, error handlers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse, PlainTextResponse

from gateway.api_keys import ApiKeyVerifier
from gateway.errors import install_error_handlers
from gateway.metrics import MetricsMiddleware, metrics_response
from gateway.request_service import RequestService
from gateway.routers import requests as requests_router
from gateway.security import Principal
from lotabots.db import make_engine
from lotabots.kafka_io import make_producer
from lotabots.settings import Settings, get_settings
from lotabots.tiers import get_tier_config


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        producer = make_producer(settings, client_id="gateway")
        await producer.start()
        api_keys = ApiKeyVerifier(engine)

        async def verify_api_key(credential: str) -> Principal | None:
            if not credential.startswith("lbk_"):
                return None
            key = await api_keys.verify(credential)
            if key is None:
                return None
            return Principal(key.tenant_id, key.tier, key.scopes, key.key_id, "api_key")

        app.state.settings = settings
        app.state.engine = engine
        app.state.producer = producer
        app.state.api_key_verifier = api_keys
        app.state.credential_verifiers = [verify_api_key]
        app.state.tiers = get_tier_config()
        app.state.request_service = RequestService(engine, producer, app.state.tiers)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await producer.stop()
            await engine.dispose()

    app = FastAPI(title="LotaBots gateway", version="1", lifespan=lifespan, default_response_class=ORJSONResponse)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    app.include_router(requests_router.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> PlainTextResponse:
        ok = getattr(request.app.state, "ready", False)
        return PlainTextResponse("ready" if ok else "starting", status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return metrics_response()

    return app
