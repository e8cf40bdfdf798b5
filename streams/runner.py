"""`lotabots worker usage-stream`: run the Faust app as a worker process.

The Faust worker owns the event loop and the SIGTERM/SIGINT handling (it stops the agents, flushes the
producer and commits offsets). /healthz and /metrics are served on ``metrics_port`` when it is set;
LotaBots' JSON logging is kept (Faust does not replace it).
"""

from __future__ import annotations

import logging

from lotabots.runners import settle_heap
from lotabots.settings import Settings

log = logging.getLogger(__name__)


def run_usage_stream(settings: Settings) -> int:
    import faust

    from lotabots.tiers import get_tier_config
    from streams.app import build_usage_app

    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust's table stores live here
    brokers = 1
    if not settings.usage_stream_replication_factor:  # the changelogs replicate like the catalogue's topics
        import asyncio

        from lotabots.topic_admin import live_brokers

        brokers = len(asyncio.run(live_brokers(settings.kafka_bootstrap))) or 1
    stream = build_usage_app(settings, get_tier_config(), brokers)
    app = stream.app

    @app.task
    async def _settle_heap() -> None:
        settle_heap()

    if settings.metrics_port:
        @app.task
        async def _serve_health() -> None:
            from lotabots.health import serve_health

            await serve_health(settings.metrics_port, lambda: not app.should_stop)

    worker = faust.Worker(app, quiet=True, loglevel=settings.log_level, override_logging=False,
                          redirect_stdouts=False)
    log.info("usage stream %s consuming usage.events on %s", settings.usage_stream_app_id, settings.kafka_bootstrap)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
