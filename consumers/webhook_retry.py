"""When a failed webhook attempt is tried again, and what an attempt's outcome means. Pure logic.

The schedule is Standard Webhooks' (5s, 5m, 30m, 2h, 5h, 10h, 10h: eight attempts in all) unless
`webhook_retry_schedule_s` compresses it (tests) or changes it. Each delay is scaled by a random
factor in [1 - jitter, 1 + jitter] so a recovering receiver is not hit by every retry at once; a
`Retry-After` on 429/503 pushes the next attempt later, never earlier, up to a cap. The retry goes to
the stage topic whose nominal delay is the largest not above the wait, so messages sharing a topic
partition have similar delays (a held message blocks only neighbours due about as late).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

from lotabots.settings import Settings
from schemas.topics import WEBHOOK_RETRY_STAGES_S


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again later if the schedule has room
    GONE = "gone"  # 410: the receiver asked us to stop; the endpoint is disabled
    REFUSED = "refused"  # the SSRF guard refused the destination: retrying cannot help


def verdict(status_code: int | None, error_code: str | None) -> Verdict:
    if error_code == "destination_refused":
        return Verdict.REFUSED
    if status_code is not None and 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code == 410:
        return Verdict.GONE
    return Verdict.RETRY  # timeouts, connection errors, 3xx (no redirects followed), 4xx, 5xx


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class NextAttempt:
    delay_s: float
    stage: int  # 1-based: the `webhooks.retry.<stage>` topic


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule: `schedule[i]` is the nominal wait before attempt i + 2."""

    schedule: tuple[float, ...] = tuple(float(s) for s in WEBHOOK_RETRY_STAGES_S)
    jitter: float = 0.2
    retry_after_max_s: float = 36_000.0

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("the webhook retry schedule needs at least one delay")
        if len(self.schedule) > len(WEBHOOK_RETRY_STAGES_S):
            raise ValueError(f"at most {len(WEBHOOK_RETRY_STAGES_S)} retries (one stage topic each)")
        if any(d < 0 for d in self.schedule):
            raise ValueError("retry delays must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        text = settings.webhook_retry_schedule_s.strip()
        schedule = tuple(float(p) for p in text.split(",") if p.strip()) if text else cls.schedule
        return cls(schedule, settings.webhook_retry_jitter, settings.webhook_retry_after_max_s)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def after(self, attempt: int, retry_after_s: float | None = None,
              rng: random.Random | None = None) -> NextAttempt | None:
        """The wait before attempt `attempt + 1`, or None when `attempt` was the last one."""
        if attempt >= self.max_attempts:
            return None
        backoff = self.schedule[attempt - 1]
        delay = backoff * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        nominal = backoff
        if retry_after_s is not None:
            honoured = min(retry_after_s, self.retry_after_max_s)
            delay = max(delay, honoured)
            nominal = max(nominal, honoured)
        return NextAttempt(delay, self.stage_for(nominal))

    def stage_for(self, wait_s: float) -> int:
        stage = 1
        for i, nominal in enumerate(self.schedule, start=1):
            if nominal <= wait_s:
                stage = i
        return stage
