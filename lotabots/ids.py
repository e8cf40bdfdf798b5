"""Identifiers: time-ordered (ULID layout), so ids sort by creation and make stable pagination cursors."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """26-char Crockford base32: 48-bit milliseconds then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out)).lower()


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"
