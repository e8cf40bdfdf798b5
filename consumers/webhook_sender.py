"""One webhook HTTP attempt: sign, POST to a pinned address, read at most a capped response, time it.

Connect/read/total timeouts, no redirects (a 3xx is a failed attempt), no proxies from the
environment, and the SSRF guard at connect time (gateway.ssrf). The outcome carries what the delivery
log records: status code, latency, the start of the response, or an error code and message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from consumers.webhook_retry import parse_retry_after
from gateway.ssrf import DestinationRefused, Resolver, SsrfPolicy, pinned_client
from gateway.webhook_signing import signed_headers
from lotabots.settings import Settings

USER_AGENT = "LotaBots-Webhooks/1"


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt gave: an HTTP status, or an error code (`timeout`, `connect_error`, ...)."""

    status_code: int | None
    latency_ms: float
    response_body: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after_s: float | None = None

    @property
    def error(self) -> str | None:
        return f"{self.error_code}: {self.error_message}" if self.error_code else None


# httpx's connection pool spends CPU per request in proportion to the requests in flight in that pool
# (about 5x more per POST at 128 than at 8), so attempts are spread over small pools.
IN_FLIGHT_PER_POOL = 8


class WebhookSender:
    """Delivers signed webhook bodies over a few pinned httpx pools (the least busy one per attempt)."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.policy = SsrfPolicy.from_setting(settings.webhook_allow_hosts)
        timeout = httpx.Timeout(connect=settings.webhook_connect_timeout_s, read=settings.webhook_read_timeout_s,
                                write=settings.webhook_read_timeout_s, pool=settings.webhook_total_timeout_s)
        pools = max(1, -(-settings.webhook_max_in_flight // IN_FLIGHT_PER_POOL))
        limits = httpx.Limits(max_connections=4 * IN_FLIGHT_PER_POOL, max_keepalive_connections=IN_FLIGHT_PER_POOL)
        self.clients = [pinned_client(self.policy, timeout, resolver=resolver, limits=limits) for _ in range(pools)]
        self._busy = [0] * pools

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def send(self, url: str, webhook_id: str, body: bytes, secrets: Sequence[str]) -> AttemptOutcome:
        pool = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[pool] += 1
        try:
            return await self._send(self.clients[pool], url, webhook_id, body, secrets)
        finally:
            self._busy[pool] -= 1

    async def _send(self, client: httpx.AsyncClient, url: str, webhook_id: str, body: bytes,
                    secrets: Sequence[str]) -> AttemptOutcome:
        timestamp = int(time.time())  # per attempt: receivers check freshness; the id stays the same
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   **signed_headers(webhook_id, timestamp, body, secrets)}
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with asyncio.timeout(self.settings.webhook_total_timeout_s):
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    head = await self._read_capped(response)
                    outcome = AttemptOutcome(
                        response.status_code, elapsed(),
                        _printable(head[: self.settings.webhook_log_response_bytes],
                                   self.settings.webhook_log_response_bytes),
                        retry_after_s=parse_retry_after(response.headers.get("retry-after"))
                        if response.status_code in (429, 503) else None,
                    )
        except DestinationRefused as exc:
            return AttemptOutcome(None, elapsed(), error_code="destination_refused", error_message=exc.message)
        except (TimeoutError, httpx.TimeoutException):
            return AttemptOutcome(None, elapsed(), error_code="timeout", error_message="no complete answer in time")
        except httpx.ConnectError as exc:
            return AttemptOutcome(None, elapsed(), error_code="connect_error", error_message=_printable(str(exc)))
        except httpx.HTTPError as exc:
            return AttemptOutcome(None, elapsed(), error_code="http_error",
                                  error_message=_printable(f"{type(exc).__name__}: {exc}"))
        return outcome

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """At most `webhook_max_response_bytes`; the rest is never read (the connection is dropped)."""
        cap = self.settings.webhook_max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= cap:
                break
        return b"".join(chunks)[:cap]


def _printable(raw: bytes | str, limit: int = 2048) -> str:
    """Text safe for the log columns (PostgreSQL text refuses NUL): a receiver controls these bytes."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return text[:limit].replace("\x00", "\ufffd")
