"""Retry schedule, jitter, Retry-After and what each attempt outcome means (pure logic)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from consumers.webhook_retry import RetryPolicy, Verdict, parse_retry_after, verdict
from lotabots.settings import Settings
from schemas.topics import WEBHOOK_RETRY_STAGES_S


def test_the_default_schedule_is_standard_webhooks_eight_attempts() -> None:
    policy = RetryPolicy.from_settings(Settings())
    assert policy.schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.max_attempts == 8
    assert policy.after(8) is None


def test_the_schedule_is_configurable_and_compressible() -> None:
    policy = RetryPolicy.from_settings(Settings(webhook_retry_schedule_s="0.5, 1.5,5", webhook_retry_jitter=0))
    assert policy.schedule == (0.5, 1.5, 5.0) and policy.max_attempts == 4
    assert [policy.after(n).delay_s for n in (1, 2, 3)] == [0.5, 1.5, 5.0]  # type: ignore[union-attr]
    assert policy.after(4) is None


def test_a_schedule_longer_than_the_stage_topics_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(tuple(1.0 for _ in range(len(WEBHOOK_RETRY_STAGES_S) + 1)))


def test_jitter_keeps_each_delay_within_its_band_and_varies_it() -> None:
    policy = RetryPolicy((10.0, 100.0), jitter=0.2)
    rng = random.Random(7)
    delays = [policy.after(1, rng=rng).delay_s for _ in range(200)]  # type: ignore[union-attr]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert max(delays) - min(delays) > 2.0
    assert all(80.0 <= policy.after(2, rng=rng).delay_s <= 120.0 for _ in range(50))  # type: ignore[union-attr]


def test_back_off_grows_from_attempt_to_attempt() -> None:
    policy = RetryPolicy.from_settings(Settings(webhook_retry_jitter=0.2))
    rng = random.Random(1)
    delays = [policy.after(n, rng=rng).delay_s for n in range(1, 7)]  # type: ignore[union-attr]
    assert delays == sorted(delays)


def test_retry_after_delays_the_next_attempt_but_never_advances_it() -> None:
    policy = RetryPolicy((5.0, 300.0, 1800.0), jitter=0.0, retry_after_max_s=600)
    assert policy.after(1, retry_after_s=120).delay_s == 120  # type: ignore[union-attr]
    assert policy.after(1, retry_after_s=1).delay_s == 5  # type: ignore[union-attr]
    assert policy.after(1, retry_after_s=10**6).delay_s == 600  # type: ignore[union-attr]  # capped


def test_the_stage_topic_matches_the_wait() -> None:
    policy = RetryPolicy((5.0, 300.0, 1800.0), jitter=0.0, retry_after_max_s=10**5)
    assert [policy.after(n).stage for n in (1, 2, 3)] == [1, 2, 3]  # type: ignore[union-attr]
    assert policy.after(1, retry_after_s=400).stage == 2  # type: ignore[union-attr]  # waits with its peers
    assert policy.after(1, retry_after_s=5000).stage == 3  # type: ignore[union-attr]


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("status, error, expected", [
    (200, None, Verdict.DELIVERED), (204, None, Verdict.DELIVERED), (299, None, Verdict.DELIVERED),
    (410, None, Verdict.GONE), (500, None, Verdict.RETRY), (503, None, Verdict.RETRY), (429, None, Verdict.RETRY),
    (400, None, Verdict.RETRY), (301, None, Verdict.RETRY), (None, "timeout", Verdict.RETRY),
    (None, "connect_error", Verdict.RETRY), (None, "destination_refused", Verdict.REFUSED),
])
def test_success_is_2xx_410_is_gone_and_everything_else_retries(status, error, expected) -> None:  # type: ignore[no-untyped-def]
    assert verdict(status, error) is expected
