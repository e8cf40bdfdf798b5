"""Entry points of the long-running processes: each installs SIGTERM/SIGINT handling and runs to completion."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

from lotabots.settings import Settings

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Call once start-up is done. Everything built so far lives as long as the process: move it out of
    the collector's sight, and collect young objects less often (a batch allocates tens of thousands of
    short-lived ones). Full collections over the start-up heap were the gateway's p99 spikes, and a third
    of the Faust app's CPU under load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def _serve_health(settings: Settings, healthy: Callable[[], bool]) -> None:
    if settings.metrics_port:
        from lotabots.health import serve_health

        await serve_health(settings.metrics_port, healthy)


def run_gateway(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    from gateway.app import create_app

    uvicorn.run(create_app(settings), host=host or settings.gateway_host, port=port or settings.gateway_port,
                log_config=None, access_log=False, timeout_graceful_shutdown=10)


def run_inference_worker(settings: Settings, tier: str) -> None:
    from consumers.inference_worker import InferenceWorker
    from inference.engine import open_chat_model, share_pool_for_single_row
    from lotabots.tiers import get_tier_config

    if tier not in get_tier_config().tiers:
        raise SystemExit(f"unknown tier {tier!r}")

    share_pool_for_single_row(settings)

    async def main() -> None:
        model = await asyncio.to_thread(open_chat_model, settings)
        worker = InferenceWorker(settings, tier, model)
        settle_heap()  # as the gateway: start-up objects out of the collector's full collections
        _on_signals(worker.request_stop)
        await _serve_health(settings, lambda: True)
        await worker.run()

    asyncio.run(main())


def run_result_writer(settings: Settings) -> None:
    from consumers.result_writer import ResultWriter
    from lotabots.db import make_engine

    async def main() -> None:
        engine = make_engine(settings.database_url)
        writer = ResultWriter(settings, engine)
        settle_heap()
        _on_signals(writer.request_stop)
        await _serve_health(settings, lambda: True)
        try:
            await writer.run()
        finally:
            await engine.dispose()

    asyncio.run(main())


def run_webhook_dispatcher(settings: Settings) -> None:
    from consumers.webhook_dispatcher import WebhookDispatcher
    from lotabots.db import make_engine

    async def main() -> None:
        engine = make_engine(settings.database_url)
        dispatcher = WebhookDispatcher(settings, engine)
        settle_heap()
        _on_signals(dispatcher.request_stop)
        await _serve_health(settings, lambda: True)
        try:
            await dispatcher.run()
        finally:
            await engine.dispose()

    asyncio.run(main())


def run_mailer(settings: Settings) -> None:
    from consumers.mailer import Mailer
    from lotabots.db import make_engine

    async def main() -> None:
        engine = make_engine(settings.database_url, pool_size=max(2, settings.mailer_concurrency))
        mailer = Mailer(settings, engine)
        settle_heap()
        _on_signals(mailer.request_stop)
        await _serve_health(settings, lambda: True)
        try:
            await mailer.run()
        finally:
            await engine.dispose()

    asyncio.run(main())
