"""Start and stop the limits with the gateway (called from gateway.app's lifespan)."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.limits.admission import SubmitLimits
from gateway.limits.backend import LimitBackend
from gateway.limits.memory_backend import MemoryBackend
from gateway.limits.policies import LimitPolicies
from gateway.limits.quota_state import QuotaStateTail
from lotabots.settings import Settings
from lotabots.usage_events import UsageEmitter


def make_backend(settings: Settings) -> LimitBackend:
    if settings.rate_limit_backend == "redis":
        from gateway.limits.redis_backend import RedisBackend  # redis is only needed when configured

        return RedisBackend(settings.redis_url, prefix=settings.rate_limit_redis_prefix,
                            ttl_s=settings.rate_limit_inflight_ttl_s, timeout_s=settings.rate_limit_redis_timeout_s)
    return MemoryBackend(settings.rate_limit_inflight_ttl_s)


async def start_limits(app: FastAPI) -> None:
    """Needs app.state.settings, tiers, producer and a started results_tail; sets app.state.limits."""
    settings: Settings = app.state.settings
    policies = LimitPolicies(app.state.tiers, settings.rate_limit_key_overrides)
    backend = make_backend(settings)
    await backend.start()
    quota_state = QuotaStateTail(settings)
    await quota_state.start()
    limits = SubmitLimits(
        backend, policies, quota_state, backend_name=settings.rate_limit_backend,
        fail_open=settings.rate_limit_fail_open, on_rejected=UsageEmitter(app.state.producer).request_rejected,
    )
    app.state.results_tail.subscribe(limits.on_lifecycle)
    app.state.limits = limits


async def stop_limits(app: FastAPI) -> None:
    limits: SubmitLimits | None = getattr(app.state, "limits", None)
    if limits is not None:
        await limits.close()
