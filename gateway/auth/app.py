"""The auth service as its own ASGI app (`lotabots serve auth`), and the pieces to embed it in the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, utcnow
from gateway.auth.events import AuthEventSink, KafkaAuthEventSink
from gateway.auth.routers import api_keys, jwks, passwords, sessions, tenants_admin, users
from gateway.auth.services import AuthServices, build_auth_services
from gateway.errors import install_error_handlers
from gateway.health import install_health_routes
from gateway.metrics import MetricsMiddleware
from gateway.openapi_docs import install_openapi
from gateway.responses import JSONBytes
from lotabots.db import make_engine
from lotabots.kafka_io import make_producer
from lotabots.settings import Settings, get_settings


def auth_routers() -> list[APIRouter]:
    return [sessions.router, passwords.router, jwks.router, users.router, api_keys.router, tenants_admin.router]


async def start_embedded_auth(app: FastAPI, settings: Settings, engine: AsyncEngine,
                              producer: AIOKafkaProducer) -> AuthServices:
    """For the gateway's lifespan: auth services on the gateway's engine and producer (`auth_embedded`)."""
    services = await build_auth_services(settings, engine, KafkaAuthEventSink(producer))
    app.state.auth = services
    return services


def create_auth_app(settings: Settings | None = None, *, events: AuthEventSink | None = None,
                    clock: Clock = utcnow) -> FastAPI:
    """The auth service. `events` replaces the Kafka sink for `auth.events` (tests, tools)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        producer: AIOKafkaProducer | None = None
        sink = events
        if sink is None:
            producer = make_producer(settings, client_id="auth")
            await producer.start()
            sink = KafkaAuthEventSink(producer)
        services = await build_auth_services(settings, engine, sink, clock=clock)
        app.state.settings = settings
        app.state.engine = engine
        app.state.auth = services
        app.state.credential_verifiers = services.verifiers
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            services.close()
            if producer is not None:
                await producer.stop()
            await engine.dispose()

    app = FastAPI(title="LotaBots auth", version="1", lifespan=lifespan, default_response_class=JSONBytes)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    for router in auth_routers():
        app.include_router(router)

    install_health_routes(app)
    install_openapi(app, "The LotaBots user authentication service (also embedded in the gateway).")

    return app
