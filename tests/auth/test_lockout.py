"""Failed logins are throttled per account and per client address; the lockout ends on its own."""

from __future__ import annotations

from schemas.auth_events import AuthEventType
from tests.auth.harness import PASSWORD, AuthHarness, running_auth, unique_email


async def _fail(auth: AuthHarness, email: str, times: int, client=None) -> list:  # type: ignore[no-untyped-def]
    client = client or auth.client
    return [await client.post("/v1/auth/login", json={"email": email, "password": "wrong password"})
            for _ in range(times)]


async def test_account_locks_after_threshold_and_says_when_to_retry(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    threshold = auth.settings.auth_lockout_threshold
    answers = await _fail(auth, email, threshold)
    assert [a.status_code for a in answers] == [401] * (threshold - 1) + [429]
    locked = answers[-1]
    assert locked.json()["error"]["code"] == "too_many_attempts"
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= auth.settings.auth_lockout_duration_s
    assert locked.json()["error"]["details"]["retry_after_s"] == retry_after
    # Even the right password is refused while locked, and the lock started an event for the owner.
    r = await auth.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 429
    assert auth.events.of(AuthEventType.ACCOUNT_LOCKED)


async def test_lockout_ends_on_its_own_after_the_window(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    await _fail(auth, email, auth.settings.auth_lockout_threshold)
    r = await auth.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    auth.clock.advance(int(r.headers["Retry-After"]) + 1)
    await auth.login(email)  # recovered, nobody had to unlock it
    # and the counter starts afresh: one more failure does not lock again
    assert (await _fail(auth, email, 1))[0].status_code == 401


async def test_failures_outside_the_window_do_not_add_up(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    threshold = auth.settings.auth_lockout_threshold
    await _fail(auth, email, threshold - 1)
    auth.clock.advance(auth.settings.auth_lockout_window_s + 1)
    assert [a.status_code for a in await _fail(auth, email, threshold - 1)] == [401] * (threshold - 1)


async def test_successful_login_resets_the_account_counter(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    threshold = auth.settings.auth_lockout_threshold
    await _fail(auth, email, threshold - 1)
    await auth.login(email)
    assert [a.status_code for a in await _fail(auth, email, threshold - 1)] == [401] * (threshold - 1)


async def test_unknown_email_locks_exactly_like_a_known_one(auth: AuthHarness) -> None:
    known = unique_email()
    await auth.signup(known)
    threshold = auth.settings.auth_lockout_threshold
    for_known = await _fail(auth, known, threshold + 1, auth.client_from("10.9.0.1"))
    for_unknown = await _fail(auth, unique_email(), threshold + 1, auth.client_from("10.9.0.2"))
    assert [(a.status_code, a.json()["error"]["code"]) for a in for_known] == \
        [(a.status_code, a.json()["error"]["code"]) for a in for_unknown]


async def test_one_address_failing_across_many_accounts_is_throttled(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with running_auth(make_settings(auth_lockout_threshold=100, auth_lockout_address_threshold=4)) as auth:
        attacker = auth.client_from("10.66.0.1")
        answers = [await attacker.post("/v1/auth/login", json={"email": unique_email(), "password": "guess 1234"})
                   for _ in range(5)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
        # another address is unaffected
        email = unique_email()
        await auth.signup(email)
        await auth.login(email)


async def test_password_reset_request_answers_identically_for_unknown_and_known_email(auth: AuthHarness) -> None:
    known = unique_email()
    await auth.signup(known)
    a = await auth.client.post("/v1/auth/password/reset-request", json={"email": known})
    b = await auth.client.post("/v1/auth/password/reset-request", json={"email": unique_email()})
    c = await auth.client.post("/v1/auth/password/reset-request", json={"email": "malformed"})
    assert a.status_code == 202
    assert (a.status_code, a.content) == (b.status_code, b.content) == (c.status_code, c.content)
    assert len(auth.events.of(AuthEventType.PASSWORD_RESET_REQUESTED, known)) == 1
