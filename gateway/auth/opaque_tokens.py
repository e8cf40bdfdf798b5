"""Opaque bearer secrets (refresh, reset, verification tokens): 256 random bits, stored as SHA-256 only.

A fast hash is right here (unlike passwords): the input has full entropy, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets

REFRESH_TOKEN_PREFIX = "lbr_"
ONE_TIME_TOKEN_PREFIX = "lbt_"


def new_opaque_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
