"""Verify a LotaBots webhook on the receiving side (Standard Webhooks). Pure standard library.

    from lotabots.webhook_verify import verify_webhook, WebhookVerificationError
    try:
        event = verify_webhook(request.headers, raw_body, "whsec_...", tolerance=300)
    except WebhookVerificationError as exc:
        return 400, exc.code
    if already_seen(request.headers["webhook-id"]):   # at-least-once: deduplicate on webhook-id
        return 200

Verify the raw body bytes exactly as received (not a re-serialised JSON). During a rotation the
platform signs with both secrets; pass several secrets while you rotate yours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The webhook is not authentic or not fresh; `code` says why (stable, machine-readable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    body = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc


def _keys(secret: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    keys = [_key(secret)] if isinstance(secret, (str, bytes)) else [_key(s) for s in secret]
    if not keys or any(not k for k in keys):
        raise ValueError("no webhook secret given")
    return keys


def _signatures(header: str) -> list[bytes]:
    found = []
    for item in header.split():
        version, _, value = item.partition(",")
        if version != "v1":  # other schemes (e.g. v1a, asymmetric) are not ours to check
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | bytes | Iterable[str | bytes],
    tolerance: float | timedelta = 300,
    *,
    now: float | None = None,
) -> Any:
    """Check the signature and timestamp of a webhook; return its JSON payload.

    `secret`: one `whsec_...` secret, raw key bytes, or several (any may match). `tolerance`: how far
    (seconds) the `webhook-timestamp` may be from now in either direction (replay protection).
    Raises WebhookVerificationError with code `missing_headers`, `invalid_timestamp`,
    `timestamp_too_old`, `timestamp_too_new` or `no_matching_signature`.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, sig_header = (lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and sig_header):
        raise WebhookVerificationError("missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("invalid_timestamp", "webhook-timestamp is not an integer") from None
    window = tolerance.total_seconds() if isinstance(tolerance, timedelta) else float(tolerance)
    current = time.time() if now is None else now
    if timestamp < current - window:
        raise WebhookVerificationError("timestamp_too_old", "webhook-timestamp is outside the tolerance")
    if timestamp > current + window:
        raise WebhookVerificationError("timestamp_too_new", "webhook-timestamp is outside the tolerance")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    signed = f"{msg_id}.{stamp}.".encode() + raw  # exactly the header text that was signed
    given = _signatures(sig_header)
    matched = False
    for key in _keys(secret):
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for candidate in given:
            # every pair is compared in constant time; no early exit reveals which one matched
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no_matching_signature", "no signature matches the given secret(s)")
    return json.loads(raw) if raw else None
