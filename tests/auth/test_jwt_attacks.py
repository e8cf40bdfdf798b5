"""The JWT attack catalogue: each forged or altered access token is refused, by the auth service's own
check and by the gateway's verifier (cached JWKS, polled revocations) alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.auth.gateway_wiring import gateway_token_verifier
from gateway.errors import ApiError
from tests.auth.harness import AuthHarness, bearer, unique_email


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


class Forge:
    """Makes tokens from a genuine one: same claims unless told otherwise, signed with the real key."""

    def __init__(self, genuine: str, kid: str, algorithm: str, private_key: Any, public_pem: bytes) -> None:
        self.genuine = genuine
        self.kid = kid
        self.algorithm = algorithm
        self.private_key = private_key
        self.public_pem = public_pem
        self.claims = jwt.decode(genuine, options={"verify_signature": False})

    def sign(self, claims: dict[str, Any] | None = None, headers: dict[str, Any] | None = None,
             key: Any = None, drop: tuple[str, ...] = ()) -> str:
        body = {**self.claims, **(claims or {})}
        for name in drop:
            body.pop(name, None)
        header = {"alg": self.algorithm, "kid": self.kid, "typ": "at+jwt", **(headers or {})}
        header = {k: v for k, v in header.items() if v is not None}
        signing_input = _segments(header, body)
        signer = jwt.algorithms.get_default_algorithms()[self.algorithm]
        return signing_input + "." + _b64(signer.sign(signing_input.encode(), key or self.private_key))


def _alg_none(f: Forge) -> str:
    return _segments({"alg": "none", "typ": "at+jwt", "kid": f.kid}, f.claims) + "."


def _hs256_with_public_key(f: Forge) -> str:
    signing_input = _segments({"alg": "HS256", "typ": "at+jwt", "kid": f.kid}, f.claims)
    signature = hmac.new(f.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def _tampered_payload(f: Forge) -> str:
    header, _, signature = f.genuine.split(".")
    evil = {**f.claims, "role": "owner", "scope": f.claims["scope"] + " platform:admin"}
    return header + "." + _b64(json.dumps(evil).encode()) + "." + signature


def _tampered_signature(f: Forge) -> str:
    head, _, signature = f.genuine.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 0x01
    return head + "." + _b64(bytes(raw))


now = lambda: int(time.time())  # noqa: E731

ATTACKS: dict[str, Callable[[Forge], str]] = {
    "alg_none": _alg_none,
    "hs256_signed_with_the_public_key": _hs256_with_public_key,
    "expired": lambda f: f.sign({"iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600}),
    "not_yet_valid": lambda f: f.sign({"nbf": now() + 3600}),
    "issued_in_the_future": lambda f: f.sign({"iat": now() + 3600, "nbf": now() + 3600, "exp": now() + 7200}),
    "wrong_audience": lambda f: f.sign({"aud": "someone-else"}),
    "audience_list_with_ours_inside": lambda f: f.sign({"aud": [f.claims["aud"], "someone-else"]}),
    "wrong_issuer": lambda f: f.sign({"iss": "https://evil.example"}),
    "wrong_typ": lambda f: f.sign(headers={"typ": "JWT"}),
    "missing_typ": lambda f: f.sign(headers={"typ": None}),
    "unknown_kid": lambda f: f.sign(headers={"kid": "sk_doesnotexist"}),
    "missing_kid": lambda f: f.sign(headers={"kid": None}),
    "foreign_key_with_our_kid": lambda f: f.sign(key=ed25519.Ed25519PrivateKey.generate()),
    "tampered_payload": _tampered_payload,
    "tampered_signature": _tampered_signature,
    "missing_session_claim": lambda f: f.sign(drop=("sid",)),
    "missing_expiry": lambda f: f.sign(drop=("exp",)),
    "algorithm_not_matching_the_key": lambda f: _segments(
        {"alg": "ES256", "typ": "at+jwt", "kid": f.kid}, f.claims) + "." + f.genuine.rsplit(".", 1)[1],
    "garbage": lambda f: "eyJhbGciOi.eyJzdWIi.c2ln",
}


async def _forge(auth: AuthHarness) -> Forge:
    tokens = await auth.signup(unique_email())
    key = await auth.services.key_ring.signing_key()
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Forge(tokens["access_token"], key.kid, key.algorithm, key.private_key, public_pem)


@pytest.fixture
async def gateway_verify(auth: AuthHarness) -> Callable[[str], Awaitable[Any]]:
    verifier = gateway_token_verifier(auth.settings, auth.services.engine)
    yield verifier
    await verifier.aclose()


async def _refused_by_both(auth: AuthHarness, gateway_verify: Any, token: str) -> None:
    r = await auth.client.get("/v1/auth/me", headers=bearer(token))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith('Bearer realm="lotabots", error="invalid_token"')
    with pytest.raises(ApiError) as refused:
        await gateway_verify(token)
    assert refused.value.status == 401


async def test_forged_but_correct_tokens_are_accepted_so_the_catalogue_is_meaningful(
    auth: AuthHarness, gateway_verify: Any
) -> None:
    forge = await _forge(auth)
    for token in (forge.genuine, forge.sign()):
        assert (await auth.client.get("/v1/auth/me", headers=bearer(token))).status_code == 200
        principal = await gateway_verify(token)
        assert principal.subject == forge.claims["sub"] and principal.tenant_id == forge.claims["tid"]


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_attack_is_refused(auth: AuthHarness, gateway_verify: Any, attack: str) -> None:
    token = ATTACKS[attack](await _forge(auth))
    await _refused_by_both(auth, gateway_verify, token)


async def test_token_of_a_revoked_session_is_refused(auth: AuthHarness, gateway_verify: Any) -> None:
    forge = await _forge(auth)
    assert (await gateway_verify(forge.genuine)) is not None
    assert (await auth.client.post("/v1/auth/logout", headers=bearer(forge.genuine))).status_code == 204
    await _refused_by_both(auth, gateway_verify, forge.genuine)


async def test_an_api_key_shaped_string_is_not_mistaken_for_a_token(gateway_verify: Any) -> None:
    assert await gateway_verify("lbk_000000000000_secret") is None


async def test_a_token_accepted_before_is_refused_once_it_expires(make_settings) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from tests.auth.harness import running_auth

    async with running_auth(make_settings(auth_access_token_ttl_s=1, auth_clock_leeway_s=0)) as auth:
        verifier = gateway_token_verifier(auth.settings, auth.services.engine)
        token = (await auth.signup(unique_email()))["access_token"]
        assert await verifier(token)  # verified and remembered
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        while time.time() <= exp + 0.01:  # wait for expiry (not a timing assertion)
            await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as refused:
            await verifier(token)
        assert refused.value.status == 401
        await verifier.aclose()
