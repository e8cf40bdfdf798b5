"""Limit state in Redis, shared by every gateway replica: one EVALSHA round trip per admission.

Settlements and signs of life come from the results tail of every replica; they are queued and sent in
pipelined batches by a background task, so the tail never waits on Redis and N replicas applying the
same terminal event cost one batched script call each (the first one ends the request, the rest are
no-ops).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway.limits import redis_scripts
from gateway.limits.backend import Outcome, Ticket

log = logging.getLogger(__name__)

DAY_COUNTER_TTL_S = 2 * 86400
MONTH_COUNTER_TTL_S = 33 * 86400
_BATCH = 256
_SCRIPTS = {"settle": redis_scripts.SETTLE, "touch": redis_scripts.TOUCH}


class RedisBackend:
    """GCRA, in-flight sets and settled token counters in Redis (see gateway.limits.redis_scripts)."""

    def __init__(self, url: str, *, prefix: str, ttl_s: float, timeout_s: float) -> None:
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._prefix = prefix
        self._ttl_ms = str(int(ttl_s * 1000))
        self._admit = self._client.register_script(redis_scripts.ADMIT)
        self._shas = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}
        self._queue: asyncio.Queue[tuple[str, list[str], list[str | int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._keys: dict[str, tuple[str, str, str, str, str]] = {}

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def start(self) -> None:
        # Nothing is sent yet: a gateway starts while Redis is away, and EVALSHA loads scripts on demand.
        self._task = asyncio.create_task(self._drain(), name="limits-redis-settle")

    async def close(self) -> None:
        if self._task is not None:
            if not self._task.done():  # hand the last settlements to Redis (bounded: it may be away)
                try:
                    await asyncio.wait_for(self._queue.join(), 2.0)
                except TimeoutError:
                    pass
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._client.aclose()

    def _tenant_keys(self, tenant_id: str) -> tuple[str, str, str, str, str]:
        keys = self._keys.get(tenant_id)
        if keys is None:
            if len(self._keys) > 65536:
                self._keys.clear()
            p = f"{self._prefix}:{{{tenant_id}}}"
            keys = self._keys[tenant_id] = (p, f"{p}:rpm", f"{p}:inflight", f"{p}:reserved", f"{p}:load")
        return keys

    async def admit(self, ticket: Ticket, now_us: int | None = None) -> Outcome:
        t = ticket
        p, rpm, inflight, reserved, load = self._tenant_keys(t.tenant_id)
        key, key_rate = t.key, (t.key.rate if t.key is not None else None)
        key_id = t.key_id or ""
        rate = t.limits.rate
        reply = await self._admit(
            keys=(rpm, f"{rpm}:{key_id}", inflight, reserved, load, f"{p}:used:{t.day}", f"{p}:used:{t.month}"),
            args=(
                t.request_id, key_id, rate.interval_us, rate.burst,
                key_rate.interval_us if key_rate else 0, key_rate.burst if key_rate else 0,
                t.limits.concurrency, (key.concurrency or 0) if key is not None else 0,
                t.reservation, t.committed_day, t.committed_month,
                t.limits.tokens_per_day, t.limits.tokens_per_month, self._ttl_ms,
                "" if now_us is None else now_us,
            ),
        )
        return Outcome(*reply)

    async def settle(self, tenant_id: str, request_id: str, tokens: int, day: str, month: str) -> bool:
        """Queue the settlement (the results tail must not wait on Redis); True means 'queued'."""
        p, _, inflight, reserved, load = self._tenant_keys(tenant_id)
        self._queue.put_nowait(("settle", [inflight, reserved, load, f"{p}:used:{day}", f"{p}:used:{month}"],
                                [request_id, tokens, DAY_COUNTER_TTL_S, MONTH_COUNTER_TTL_S]))
        return True

    async def settle_now(self, tenant_id: str, request_id: str, tokens: int, day: str, month: str) -> bool:
        """Settle and wait for Redis' answer (replays and failed submits give back their admission)."""
        p, _, inflight, reserved, load = self._tenant_keys(tenant_id)
        keys = [inflight, reserved, load, f"{p}:used:{day}", f"{p}:used:{month}"]
        args: list[str | int] = [request_id, tokens, DAY_COUNTER_TTL_S, MONTH_COUNTER_TTL_S]
        return bool(await self._evalsha("settle", keys, args))

    async def touch(self, tenant_id: str, request_id: str) -> None:
        _, _, inflight, reserved, load = self._tenant_keys(tenant_id)
        self._queue.put_nowait(("touch", [inflight, reserved, load], [request_id, self._ttl_ms]))

    async def _load_scripts(self) -> None:
        for name, text in _SCRIPTS.items():
            self._shas[name] = await self._client.script_load(text)

    async def _evalsha(self, name: str, keys: list[str], args: list[str | int]) -> object:
        try:
            return await self._client.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted without its script cache
            await self._load_scripts()
            return await self._client.evalsha(self._shas[name], len(keys), *keys, *args)

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            ops = [first]
            while len(ops) < _BATCH and not self._queue.empty():
                ops.append(self._queue.get_nowait())
            for attempt in range(3):
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for name, keys, args in ops:
                            pipe.evalsha(self._shas[name], len(keys), *keys, *args)
                        await pipe.execute()
                    break
                except NoScriptError:
                    await self._load_scripts()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Entries that cannot be settled now expire on their own after the in-flight ttl.
                    log.exception("limits: settling %d in-flight requests in Redis failed (attempt %d)",
                                  len(ops), attempt + 1)
                    await asyncio.sleep(0.2 * (attempt + 1))
            for _ in ops:
                self._queue.task_done()
