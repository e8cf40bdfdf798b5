"""Signing-key rotation: published before it signs, old public keys kept until their tokens expired,
private keys sealed at rest, and verifiers refetching the JWKS on an unknown `kid`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from pydantic import SecretStr
from sqlalchemy import select

from gateway.auth.gateway_wiring import gateway_token_verifier
from gateway.auth.key_rotation import prune_keys, rotate_keys
from gateway.auth.key_sealing import KeySealer, load_kek, new_kek
from gateway.auth.signing_keys import SigningKeyStore
from gateway.errors import ApiError
from schemas.auth_tables import signing_keys
from tests.auth.harness import AuthHarness, running_auth, unique_email


def _kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


async def _published(auth: AuthHarness) -> set[str]:
    return {k["kid"] for k in (await auth.client.get("/.well-known/jwks.json")).json()["keys"]}


def _store(auth: AuthHarness) -> SigningKeyStore:
    return SigningKeyStore(auth.services.engine, KeySealer(load_kek(auth.settings)), auth.clock)


async def test_rotation_publishes_first_signs_later_and_retires_after_token_lifetime(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with running_auth(make_settings(auth_key_reload_s=0)) as auth:
        email = unique_email()
        old_token = (await auth.signup(email))["access_token"]
        old_kid = _kid(old_token)
        lead = 600
        rotation = await rotate_keys(_store(auth), auth.settings, auth.clock(), lead_s=lead)

        assert await _published(auth) == {old_kid, rotation.kid}  # published now...
        assert _kid((await auth.login(email))["access_token"]) == old_kid  # ...but not signing yet

        auth.clock.advance(lead + 1)
        new_token = (await auth.login(email))["access_token"]
        assert _kid(new_token) == rotation.kid
        assert await _published(auth) == {old_kid, rotation.kid}  # old tokens may still be in flight

        auth.clock.advance(auth.settings.auth_access_token_ttl_s + auth.settings.auth_clock_leeway_s + 1)
        assert await prune_keys(_store(auth), auth.settings, auth.clock()) == [old_kid]
        assert await _published(auth) == {rotation.kid}
        assert _kid((await auth.login(email))["access_token"]) == rotation.kid


async def test_rotation_never_prunes_a_key_that_still_signs(auth: AuthHarness) -> None:
    await auth.signup(unique_email())
    before = await _published(auth)
    auth.clock.advance(10 * auth.settings.auth_access_token_ttl_s)
    result = await rotate_keys(_store(auth), auth.settings, auth.clock(), lead_s=60)
    assert result.pruned == []
    await auth.services.key_ring.reload()
    assert await _published(auth) == before | {result.kid}


async def test_gateway_refetches_the_jwks_on_an_unknown_kid(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with running_auth(make_settings(auth_key_reload_s=0, auth_jwks_refresh_s=3600,
                                          auth_jwks_min_refetch_s=0)) as auth:
        email = unique_email()
        verifier = gateway_token_verifier(auth.settings, auth.services.engine)
        assert await verifier((await auth.signup(email))["access_token"])  # JWKS cached now
        await rotate_keys(_store(auth), auth.settings, auth.clock(), lead_s=0)
        fresh = (await auth.login(email))["access_token"]
        assert await verifier(fresh)  # unknown kid -> refetch -> accepted
        await verifier.aclose()


async def test_unknown_kid_refetches_are_rate_limited(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with running_auth(make_settings(auth_key_reload_s=0, auth_jwks_refresh_s=3600,
                                          auth_jwks_min_refetch_s=3600)) as auth:
        email = unique_email()
        verifier = gateway_token_verifier(auth.settings, auth.services.engine)
        assert await verifier((await auth.signup(email))["access_token"])
        await rotate_keys(_store(auth), auth.settings, auth.clock(), lead_s=0)
        with pytest.raises(ApiError) as refused:
            await verifier((await auth.login(email))["access_token"])
        assert refused.value.status == 401  # random kids cannot make it hammer the key source
        await verifier.aclose()


async def test_private_keys_are_sealed_at_rest(auth: AuthHarness) -> None:
    async with auth.services.engine.connect() as conn:
        rows = (await conn.execute(select(signing_keys))).all()
    assert rows
    for row in rows:
        assert "PRIVATE" not in row.private_key_sealed and row.private_key_sealed.startswith("v1.")
        assert "d" not in row.public_jwk
        with pytest.raises(InvalidTag):  # another KEK cannot open it
            KeySealer(load_kek(auth.settings.model_copy(update={"auth_key_encryption_key": SecretStr(new_kek())}))).unseal(
                row.kid, row.private_key_sealed)
        with pytest.raises(InvalidTag):  # nor can it be moved to another key id
            KeySealer(load_kek(auth.settings)).unseal("sk_other", row.private_key_sealed)


async def test_without_a_configured_kek_a_0600_file_is_generated(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(auth_key_encryption_key=None)
    async with running_auth(settings) as auth:
        await auth.signup(unique_email())
    kek_file = settings.data_dir / "auth" / "signing.kek"
    assert kek_file.stat().st_mode & 0o777 == 0o600
    os.chmod(kek_file, 0o644)
    with pytest.raises(PermissionError):
        load_kek(settings)


async def test_cli_rotate_keys_adds_a_key_the_running_service_publishes(auth: AuthHarness) -> None:
    env = {**os.environ, "LOTABOTS_DATABASE_URL": auth.settings.database_url,
           "LOTABOTS_DATA_DIR": str(auth.settings.data_dir), "LOTABOTS_LOG_JSON": "false",
           "LOTABOTS_AUTH_KEY_ENCRYPTION_KEY": auth.settings.auth_key_encryption_key.get_secret_value()}
    command = [sys.executable, "-m", "lotabots.cli", "auth", "rotate-keys", "--lead-seconds", "0"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kid = json.loads(done.stdout.strip().splitlines()[-1])["kid"]
    await auth.services.key_ring.reload()
    assert kid in await _published(auth)
    assert _kid((await auth.signup(unique_email()))["access_token"]) == kid


async def test_withdrawing_a_compromised_key_ends_tokens_it_signed(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with running_auth(make_settings(auth_key_reload_s=0, auth_jwks_refresh_s=0.001)) as auth:
        verifier = gateway_token_verifier(auth.settings, auth.services.engine)
        token = (await auth.signup(unique_email()))["access_token"]
        assert await verifier(token)  # verified and remembered
        await rotate_keys(_store(auth), auth.settings, auth.clock(), lead_s=0)
        await _store(auth).delete([_kid(token)])  # emergency: the old key is pulled
        with pytest.raises(ApiError) as refused:
            await verifier(token)
        assert refused.value.status == 401
        await verifier.aclose()
