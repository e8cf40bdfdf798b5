"""The limits' cost on the submit path, against baselines measured in the same run.

Figures are the best of five runs of n operations each, in microseconds per operation.

* in-process: one admission + settlement (SubmitLimits over MemoryBackend, the RateLimit fields built)
  versus validating the submit body (pydantic), which every submit pays anyway;
* Redis: one admission (EVALSHA of the admit script) versus one PING on the same client, and versus the
  same call (same keys and arguments) to a script that does nothing: what an admission costs beyond one
  round trip is argument encoding and the script's own work.

A real redis-server is started on a free loopback port (tests/services.py). Usage:
python bench/bench_limits.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)

BODY = b'{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}'


async def _memory(n: int) -> tuple[float, float]:
    from gateway.limits.admission import SubmitLimits
    from gateway.limits.memory_backend import MemoryBackend
    from gateway.limits.policies import LimitPolicies
    from gateway.request_models import SubmitRequestBody
    from gateway.security import Principal
    from lotabots.tiers import get_tier_config
    from schemas.events import LifecycleType, RequestLifecycleEvent

    limits = SubmitLimits(MemoryBackend(900), LimitPolicies(get_tier_config()), None, backend_name="memory",
                          fail_open=False)
    # many tenants, so that no run reaches a tier limit (a refusal would be a cheaper path)
    callers = [Principal(f"ten_{i}", "enterprise", frozenset({"requests:write"}), f"key_{i}", "api_key")
               for i in range(1000)]
    turn = 0
    body = SubmitRequestBody.model_validate_json(BODY)
    done = RequestLifecycleEvent(event_id="e", request_id="r", tenant_id="ten_bench", tier="enterprise",
                                 type=LifecycleType.SUCCEEDED, at=datetime.now(UTC), prompt_tokens=20,
                                 completion_tokens=16)

    def validate() -> None:
        SubmitRequestBody.model_validate_json(BODY)

    async def admit_and_settle() -> None:
        nonlocal turn
        turn += 1
        who = callers[turn % 1000]
        admission = await limits.admit(who, body)
        await limits.backend.settle(who.tenant_id, admission.request_id, 36, "x", "y")  # type: ignore[arg-type]

    await limits.on_lifecycle(done)  # the results-tail path, once (its cost is the settlement above)
    t_validate = min(_loop_sync(validate, n) for _ in range(5))
    t_admit = await _best_async(admit_and_settle, n)
    return t_admit, t_validate


async def _redis(url: str, n: int) -> tuple[float, float]:
    from gateway.limits.policies import LimitPolicies
    from gateway.limits.redis_backend import RedisBackend
    from lotabots.tiers import get_tier_config
    from tests.limits.helpers import ticket

    backend = RedisBackend(url, prefix="bench", ttl_s=900, timeout_s=2)
    await backend.start()
    policies = LimitPolicies(get_tier_config())
    i = 0

    async def admit() -> None:
        nonlocal i
        i += 1
        await backend.admit(ticket(policies, "enterprise", f"t{i % 512}", f"r{i}", reservation=36))

    async def ping() -> None:
        await backend.client.ping()

    try:
        await admit()
        t_ping = await _best_async(ping, n)
        t_admit = await _best_async(admit, n)
        script = backend._admit  # noqa: SLF001
        backend._admit = backend.client.register_script("return {0,0,0,0,0,0,0,0,0,0,0,0}")  # noqa: SLF001
        await admit()
        t_empty = await _best_async(admit, n)
        backend._admit = script  # noqa: SLF001
    finally:
        await backend.close()
    return t_admit, t_ping, t_empty


def _loop_sync(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


async def _loop_async(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n


async def _best_async(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    return min([await _loop_async(fn, n) for _ in range(5)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    from tests.services import redis_service

    admit, validate = asyncio.run(_memory(args.n))
    print(f"in-process admission + settlement : {admit * 1e6:7.2f} us")
    print(f"submit body validation (baseline) : {validate * 1e6:7.2f} us   ratio {admit / validate:.2f}x")
    with redis_service(Path(tempfile.mkdtemp(prefix="bench-limits-"))) as redis:
        r_admit, r_ping, r_empty = asyncio.run(_redis(redis.url, max(1000, args.n // 10)))
    print(f"Redis admission (one EVALSHA)     : {r_admit * 1e6:7.2f} us")
    print(f"Redis PING round trip (baseline)  : {r_ping * 1e6:7.2f} us   ratio {r_admit / r_ping:.2f}x")
    print(f"same call, empty script (baseline): {r_empty * 1e6:7.2f} us   ratio {r_admit / r_empty:.2f}x"
          " (the rest is the script's work in Redis)")


if __name__ == "__main__":
    main()
