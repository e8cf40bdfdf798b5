"""Webhook signing secrets and signatures, exactly per the Standard Webhooks specification.

A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is the base64-decoded part. A message
is signed as `v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`; with several
live secrets (during a rotation's overlap) the signatures are space-separated in one header.
Secrets are sealed at rest with AES-GCM under the auth key-encryption key, the secret's row id as
associated data (a sealed secret cannot be moved to another row).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random
from collections.abc import Sequence

from gateway.auth.key_sealing import KeySealer, load_kek
from lotabots.settings import Settings

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret."""
    body = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(body + "=" * (-len(body) % 4))


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signed_headers(webhook_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per live secret."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, webhook_id, timestamp, body) for s in secrets),
    }


class SecretBox:
    """Seals and unseals signing secrets (reuses the auth service's AES-GCM sealing and KEK)."""

    def __init__(self, sealer: KeySealer) -> None:
        self._sealer = sealer

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(KeySealer(load_kek(settings)))

    def seal(self, secret_id: str, secret: str) -> str:
        return self._sealer.seal(secret_id, secret.encode())

    def unseal(self, secret_id: str, sealed: str) -> str:
        return self._sealer.unseal(secret_id, sealed).decode()
