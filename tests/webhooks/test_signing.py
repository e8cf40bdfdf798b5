"""Signatures follow Standard Webhooks exactly, and `verify_webhook` checks them like a receiver should.

The reference implementation here is the `standardwebhooks` package, not our own code.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceRefusal

from gateway.webhook_signing import SECRET_PREFIX, new_secret, secret_key, signed_headers
from lotabots.webhook_verify import WebhookVerificationError, verify_webhook

BODY = json.dumps({"type": "request.succeeded", "timestamp": "2026-01-01T00:00:00+00:00",
                   "data": {"id": "req_1", "status": "succeeded"}}).encode()


def test_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith(SECRET_PREFIX) and a != b
    assert len(base64.b64decode(a[len(SECRET_PREFIX):])) == 32
    assert secret_key(a) == base64.b64decode(a[len(SECRET_PREFIX):])


def test_our_signature_verifies_with_the_reference_implementation() -> None:
    secret = new_secret()
    headers = signed_headers("msg_abc", int(time.time()), BODY, [secret])
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_the_reference_signature_equals_ours_byte_for_byte() -> None:
    from datetime import UTC, datetime

    secret = new_secret()
    stamp = int(time.time())
    ours = signed_headers("msg_xyz", stamp, BODY, [secret])["webhook-signature"]
    reference = Webhook(secret).sign("msg_xyz", datetime.fromtimestamp(stamp, UTC), BODY.decode())
    assert ours == reference


def test_two_secrets_give_two_space_separated_signatures_each_verifying_alone() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers("msg_rot", int(time.time()), BODY, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(ReferenceRefusal):
        Webhook(new_secret()).verify(BODY, headers)


def test_verify_webhook_accepts_an_authentic_fresh_message_and_returns_its_payload() -> None:
    secret = new_secret()
    headers = signed_headers("msg_1", int(time.time()), BODY, [secret])
    assert verify_webhook(headers, BODY, secret, tolerance=300) == json.loads(BODY)
    # header names are case-insensitive; the body may be text
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_webhook(upper, BODY.decode(), secret)["data"]["id"] == "req_1"


def test_verify_webhook_accepts_a_reference_signed_message() -> None:
    from datetime import UTC, datetime

    secret = new_secret()
    now = datetime.now(UTC)
    headers = {"webhook-id": "msg_ref", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(secret).sign("msg_ref", now, BODY.decode())}
    assert verify_webhook(headers, BODY, secret)["type"] == "request.succeeded"


@pytest.mark.parametrize("tamper, code", [
    (lambda h, b: (h, b + b" "), "no_matching_signature"),
    (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "no_matching_signature"),
    (lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b), "no_matching_signature"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing_headers"),
    (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "invalid_timestamp"),
    (lambda h, b: ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, b), "no_matching_signature"),
])
def test_verify_webhook_refuses_tampered_messages(tamper, code: str) -> None:  # type: ignore[no-untyped-def]
    secret = new_secret()
    headers, body = tamper(signed_headers("msg_t", int(time.time()), BODY, [secret]), BODY)
    with pytest.raises(WebhookVerificationError) as err:
        verify_webhook(headers, body, secret)
    assert err.value.code == code


def test_verify_webhook_refuses_a_wrong_secret() -> None:
    headers = signed_headers("msg_w", int(time.time()), BODY, [new_secret()])
    with pytest.raises(WebhookVerificationError) as err:
        verify_webhook(headers, BODY, new_secret())
    assert err.value.code == "no_matching_signature"


def test_verify_webhook_enforces_the_timestamp_tolerance_both_ways() -> None:
    secret = new_secret()
    now = 1_800_000_000
    old = signed_headers("msg_o", now - 301, BODY, [secret])
    future = signed_headers("msg_f", now + 301, BODY, [secret])
    with pytest.raises(WebhookVerificationError) as too_old:
        verify_webhook(old, BODY, secret, tolerance=300, now=now)
    assert too_old.value.code == "timestamp_too_old"
    with pytest.raises(WebhookVerificationError) as too_new:
        verify_webhook(future, BODY, secret, tolerance=timedelta(minutes=5), now=now)
    assert too_new.value.code == "timestamp_too_new"
    assert verify_webhook(old, BODY, secret, tolerance=400, now=now)["data"]["status"] == "succeeded"


def test_verify_webhook_takes_several_secrets_for_the_receivers_own_rotation() -> None:
    current = new_secret()
    headers = signed_headers("msg_s", int(time.time()), BODY, [current])
    assert verify_webhook(headers, BODY, [new_secret(), current]) is not None
    assert verify_webhook(headers, BODY, [secret_key(current)]) is not None
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, BODY, [new_secret(), new_secret()])


def test_verify_webhook_matches_any_of_several_signatures() -> None:
    a, b = new_secret(), new_secret()
    headers = signed_headers("msg_m", int(time.time()), BODY, [a, b])
    assert verify_webhook(headers, BODY, b) is not None
    assert verify_webhook(headers, BODY, a) is not None


def test_verify_webhook_refuses_an_empty_or_malformed_secret() -> None:
    headers = signed_headers("msg_e", int(time.time()), BODY, [new_secret()])
    with pytest.raises(ValueError):
        verify_webhook(headers, BODY, [])
    with pytest.raises(ValueError):
        verify_webhook(headers, BODY, "whsec_not base64!")
