"""Test harness for the auth suite: a running auth app with a recording mailbox and a shiftable clock."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx

from gateway.auth.app import create_auth_app
from gateway.auth.clock import utcnow
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent, AuthEventType

_counter = itertools.count()
PASSWORD = "correct horse battery"


class RecordingEvents:
    """The `auth.events` sink in these tests: keeps what the mailer would receive."""

    def __init__(self) -> None:
        self.events: list[AuthEvent] = []

    async def publish(self, event: AuthEvent) -> None:
        self.events.append(event)

    def of(self, type: AuthEventType, email: str | None = None) -> list[AuthEvent]:
        return [e for e in self.events if e.type == type and (email is None or e.email == email)]

    def token(self, type: AuthEventType, email: str) -> str:
        """The token inside the newest link of that type mailed to `email`."""
        link = self.of(type, email)[-1].link
        assert link is not None
        return link.rsplit("token=", 1)[1]


class ShiftableClock:
    """Real time plus an offset that tests advance instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class AuthHarness:
    """One running auth app, an HTTP client on it, its mailbox and its clock."""

    def __init__(self, app: Any, client: httpx.AsyncClient, events: RecordingEvents, clock: ShiftableClock,
                 settings: Settings) -> None:
        self.app = app
        self.client = client
        self.events = events
        self.clock = clock
        self.settings = settings

    @property
    def services(self) -> Any:
        return self.app.state.auth

    def client_from(self, address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(self.app, client=(address, 40000)),
                                 base_url="http://auth.test")

    async def signup(self, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
        """Register, follow the verification link, log in; returns the token response."""
        r = await self.client.post("/v1/auth/register", json={"email": email, "password": password, **extra})
        assert r.status_code == 202, r.text
        token = self.events.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email.strip().lower())
        r = await self.client.post("/v1/auth/verify-email", json={"token": token})
        assert r.status_code == 204, r.text
        return await self.login(email, password)

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        r = await self.client.post("/v1/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return r.json()

    async def invite_and_join(self, admin_token: str, email: str, role: str) -> dict[str, Any]:
        r = await self.client.post("/v1/users", json={"email": email, "role": role}, headers=bearer(admin_token))
        assert r.status_code == 201, r.text
        token = self.events.token(AuthEventType.USER_INVITED, email)
        r = await self.client.post("/v1/auth/password/reset", json={"token": token, "new_password": PASSWORD})
        assert r.status_code == 204, r.text
        return await self.login(email)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_auth(settings: Settings) -> AsyncIterator[AuthHarness]:
    events, clock = RecordingEvents(), ShiftableClock()
    app = create_auth_app(settings, events=events, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, client=(f"10.0.{next(_counter) % 250}.{next(_counter) % 250}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as client:
            yield AuthHarness(app, client, events, clock, settings)


def unique_email(tag: str = "user") -> str:
    return f"{tag}{next(_counter)}@example.com"
