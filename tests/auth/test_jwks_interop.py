"""Access tokens verify with a second, independent JOSE library (joserfc) against the published JWKS."""

from __future__ import annotations

import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from tests.auth.harness import running_auth, unique_email


# RFC 9864 prefers the fully-specified "Ed25519"; pyjwt (and most verifiers today) know only "EdDSA".
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
async def test_tokens_verify_with_joserfc_against_the_published_jwks(make_settings, algorithm: str) -> None:  # type: ignore[no-untyped-def]
    async with running_auth(make_settings(auth_jwt_algorithm=algorithm)) as auth:
        email = unique_email()
        access = (await auth.signup(email))["access_token"]
        r = await auth.client.get("/.well-known/jwks.json")
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("public, max-age=")
        jwks = r.json()
        assert all("d" not in k for k in jwks["keys"])  # public halves only

        token = jose_jwt.decode(access, KeySet.import_key_set(jwks), algorithms=[algorithm])
        assert token.header["alg"] == algorithm
        assert token.header["typ"] == "at+jwt"
        assert token.header["kid"] in {k["kid"] for k in jwks["keys"]}
        claims = jose_jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": auth.settings.auth_issuer},
            aud={"essential": True, "value": auth.settings.auth_audience},
            exp={"essential": True}, nbf={"essential": True}, iat={"essential": True},
            jti={"essential": True}, sub={"essential": True},
        )
        claims.validate(token.claims)
        assert token.claims["role"] == "owner"
        assert token.claims["exp"] - token.claims["iat"] == auth.settings.auth_access_token_ttl_s

        head, payload, signature = access.split(".")
        forged = head + "." + payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
        with pytest.raises((BadSignatureError, ValueError)):
            jose_jwt.decode(forged, KeySet.import_key_set(jwks), algorithms=[algorithm])
