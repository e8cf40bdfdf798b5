"""bcrypt never runs on the event loop: a cheap request is answered while a login burst is still hashing."""

from __future__ import annotations

import asyncio
import threading

import bcrypt
import pytest

from tests.auth.harness import PASSWORD, running_auth, unique_email


class BcryptSpy:
    """Wraps bcrypt to see which thread runs it and how many runs are in progress."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.in_flight = 0
        self.started = threading.Event()
        self._lock = threading.Lock()

    def wrap(self, fn):  # type: ignore[no-untyped-def]
        def spied(*args):  # type: ignore[no-untyped-def]
            with self._lock:
                self.threads.add(threading.get_ident())
                self.in_flight += 1
            self.started.set()
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.in_flight -= 1
        return spied


async def test_login_burst_hashes_off_the_loop_and_other_requests_are_served(
    make_settings, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    async with running_auth(make_settings(auth_bcrypt_rounds=12, auth_lockout_address_threshold=1000)) as auth:
        email = unique_email()
        await auth.signup(email)
        spy = BcryptSpy()
        monkeypatch.setattr(bcrypt, "checkpw", spy.wrap(bcrypt.checkpw))
        monkeypatch.setattr(bcrypt, "hashpw", spy.wrap(bcrypt.hashpw))

        burst = [asyncio.create_task(auth.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}))
                 for _ in range(6)]
        await asyncio.to_thread(spy.started.wait, 30)
        health = await auth.client.get("/healthz")
        still_hashing = spy.in_flight
        results = await asyncio.gather(*burst)

        assert health.status_code == 200
        assert still_hashing > 0  # answered while bcrypt was running: the loop was free
        assert all(r.status_code == 200 for r in results)
        assert threading.get_ident() not in spy.threads
