"""The chaos suite's clients: tenants that submit across tiers, with and without webhooks, and retry the
way the README tells clients to (same Idempotency-Key, on another replica when one does not answer)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRYABLE = {429, 503}


@dataclass
class Tenant:
    tenant_id: str
    key: str
    tier: str
    webhook_url: str | None = None


@dataclass
class Ledger:
    """What the clients saw: each acknowledged request once, and every answer's status."""

    accepted: dict[str, str] = field(default_factory=dict)  # request id -> tenant id
    by_key: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> request id
    with_webhook: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0
    replica_switches: int = 0
    conflicting_replays: list[tuple[str, str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # 5xx other than 503, or a 4xx that should not be


class Clients:
    def __init__(self, gateway_urls: list[str], rng: random.Random) -> None:
        self.urls = gateway_urls
        self.rng = rng
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(20, connect=3))
        self.ledger = Ledger()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _note(self, r: httpx.Response, what: str) -> None:
        self.ledger.statuses[r.status_code] += 1
        if r.status_code >= 400:
            try:
                self.ledger.codes[r.json()["error"]["code"]] += 1
            except (ValueError, KeyError, TypeError):
                self.ledger.codes["<no error body>"] += 1
        if r.status_code >= 500 and r.status_code != 503:
            self.ledger.unexpected.append(f"{what}: {r.status_code} {r.text[:300]}")
        if r.status_code == 503 and "retry-after" not in r.headers:
            self.ledger.unexpected.append(f"{what}: 503 without Retry-After: {r.text[:300]}")

    async def submit(self, tenant: Tenant, text: str, max_tokens: int, *, long_poll: bool) -> str:
        """Until acknowledged (202): the request id. Retries 429/503 after Retry-After and a replica that
        does not answer on the other one, always with the same Idempotency-Key."""
        key = str(uuid.uuid4())
        body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
        if tenant.webhook_url:
            body |= {"webhook": tenant.webhook_url, "webhook_events_filter": ["completed"]}
        headers = {"Authorization": f"Bearer {tenant.key}", "Idempotency-Key": key}
        if long_poll:
            headers["Prefer"] = "wait=3"
        replica = self.rng.randrange(len(self.urls))
        for _ in range(400):
            url = self.urls[replica]
            try:
                r = await self.http.post(f"{url}/v1/requests", json=body, headers=headers)
            except httpx.TransportError:
                self.ledger.transport_errors += 1
                replica = (replica + 1) % len(self.urls)
                self.ledger.replica_switches += 1
                await asyncio.sleep(0.2)
                continue
            self._note(r, f"POST /v1/requests ({tenant.tier})")
            if r.status_code == 202:
                rid = r.json()["id"]
                seen = self.ledger.by_key.setdefault(key, rid)
                if seen != rid:
                    self.ledger.conflicting_replays.append((key, seen, rid))
                self.ledger.accepted[rid] = tenant.tenant_id
                if tenant.webhook_url:
                    self.ledger.with_webhook.add(rid)
                return rid
            if r.status_code in RETRYABLE:
                await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 2.0))
                if r.status_code == 503:
                    replica = (replica + 1) % len(self.urls)
                continue
            self.ledger.unexpected.append(f"submit answered {r.status_code}: {r.text[:300]}")
            raise AssertionError(f"submit answered {r.status_code}: {r.text[:300]}")
        raise AssertionError("a submit was not acknowledged after 400 tries")

    async def read(self, tenant: Tenant, path: str) -> None:
        """A read under chaos (poll, long-poll, usage): any answer but a 5xx other than 503."""
        url = self.urls[self.rng.randrange(len(self.urls))]
        try:
            r = await self.http.get(f"{url}{path}", headers={"Authorization": f"Bearer {tenant.key}"})
        except httpx.TransportError:
            self.ledger.transport_errors += 1
            return
        self._note(r, f"GET {path.split('?')[0]}")
