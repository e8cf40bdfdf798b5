"""The agents. Each is a short loop over batches of a stream; the rules live in the screens they call.

* ``usage-billing`` (``usage.events``): validate → dedupe → price → ``usage.billable`` (one BillableBatch per
  tenant per batch); poison → ``usage.dlq``.
* ``usage-quota`` (``usage.billable``): fold into per-tenant day/month counters → ``usage.quota-state``.

Both use ``take_events`` so a batch is acknowledged only after the agent handled all of it; Faust flushes
the producer (changelogs, outputs, DLQ) before it commits offsets, so every effect is on the broker
before its input offset is committed (at-least-once; the usage service deduplicates by event id).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from lotabots.usage_metrics import (
    CONSUMER_LAG,
    USAGE_BILLABLE_OUT,
    USAGE_DEAD_LETTERS,
    USAGE_EVENTS_IN,
    USAGE_QUOTA_UPDATES,
    USAGE_SEEN_EXPIRED,
)
from schemas.events import DeadLetter
from schemas.topics import USAGE_EVENTS
from schemas.usage import QuotaState
from streams.app import UsageStream
from streams.pricing import price_usage_event
from streams.quota import QuotaFact, fold_quota
from streams.validate import Refusal, validate_usage_event

log = logging.getLogger(__name__)

BATCH_MAX = 5000
BATCH_WITHIN_S = 0.1
FACTS_PER_MESSAGE = 500  # keeps a billable message well under the broker's 1 MB message limit
CONSUMER_NAME = "usage-stream"
_DUPLICATES = USAGE_EVENTS_IN.labels("duplicate")


def dead_letter(message: Any, code: str, error: str) -> bytes:
    raw = message.value if isinstance(message.value, bytes | bytearray) else b""
    key = message.key.decode(errors="replace") if isinstance(message.key, bytes | bytearray) else None
    letter = DeadLetter(
        source_topic=message.topic, source_partition=message.partition, source_offset=message.offset, key=key,
        payload=bytes(raw).decode(errors="replace")[:1_000_000], error_code=code, error_message=error[:2000],
        consumer=CONSUMER_NAME, at=datetime.now(UTC),
    )
    return letter.model_dump_json().encode()


def billable_batch(tenant_id: str, facts: list[bytes]) -> bytes:
    """A BillableBatch's JSON from already-encoded facts (no second pass through the model)."""
    return b'{"schema_version":1,"tenant_id":' + orjson.dumps(tenant_id) + b',"facts":[' + b",".join(facts) + b"]}"


def register_agents(stream: UsageStream) -> None:
    _billing_agent(stream)
    _quota_agent(stream)
    _housekeeping(stream)


def _billing_agent(s: UsageStream) -> None:
    tiers, seen, topics = s.tiers, s.seen, s.topics

    @s.app.agent(topics.events, name="usage-billing")
    async def usage_billing(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            now = time.time()
            by_tenant: dict[str, list[bytes]] = {}
            kinds: dict[str, int] = {}
            for event in events:
                message = event.message
                fact = validate_usage_event(event.value, tiers)
                if isinstance(fact, Refusal):
                    await topics.dlq.send(value=dead_letter(message, fact.code, fact.message))
                    USAGE_DEAD_LETTERS.labels("stream", fact.code).inc()
                    USAGE_EVENTS_IN.labels("dead_lettered").inc()
                    continue
                if seen.is_duplicate(fact.id, message.partition, message.offset):
                    _DUPLICATES.inc()
                    continue
                seen.remember(message.partition, message.offset, fact.id)
                billable = price_usage_event(fact, tiers.get(fact.data.tier).prices)
                by_tenant.setdefault(billable.tenant_id, []).append(billable.model_dump_json().encode())
                kinds[billable.kind.value] = kinds.get(billable.kind.value, 0) + 1
            seen.flush(now)  # the batch's new ids: one changelog record per partition
            for tenant_id, facts in by_tenant.items():
                for i in range(0, len(facts), FACTS_PER_MESSAGE):
                    await topics.billable.send(key=tenant_id.encode(),
                                               value=billable_batch(tenant_id, facts[i:i + FACTS_PER_MESSAGE]))
                USAGE_EVENTS_IN.labels("billable").inc(len(facts))
            for kind, n in kinds.items():
                USAGE_BILLABLE_OUT.labels(kind).inc(n)


def _quota_agent(s: UsageStream) -> None:
    table, topics = s.quota_table, s.topics

    @s.app.agent(topics.billable, name="usage-quota")
    async def usage_quota(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            now = datetime.now(UTC)
            changed: dict[str, tuple[int, int, QuotaState]] = {}
            for event in events:
                message = event.message
                try:
                    batch = orjson.loads(event.value)
                    tenant_id = str(batch["tenant_id"])
                    facts = [QuotaFact.from_billable(f) for f in batch["facts"]]
                except Exception as exc:
                    await topics.dlq.send(value=dead_letter(message, "invalid_billable_batch", str(exc)))
                    USAGE_DEAD_LETTERS.labels("quota", "invalid_billable_batch").inc()
                    continue
                previous = changed.get(tenant_id)
                applied, state = (previous[1], previous[2]) if previous else _load_quota(table, tenant_id)
                if message.offset <= applied:
                    continue  # folded before a crash (its table write was durable): not twice
                for fact in facts:
                    if fact.tokens or fact.requests:  # rejections do not count against a quota
                        state = fold_quota(state, fact, now)
                if state is not None:
                    changed[tenant_id] = (message.partition, message.offset, state)
            # one table write and one quota-state record per tenant per batch, not per fact; the table keeps
            # the last folded offset with the counters (one record), so a replay after a crash folds each
            # billable fact once (a tenant's facts are all on one partition: the key is the tenant id)
            for tenant_id, (partition, offset, state) in changed.items():
                value = state.model_dump(mode="json")
                table.data[tenant_id] = {"state": value, "offset": offset}
                table.send_changelog(partition, tenant_id, {"state": value, "offset": offset})
                await topics.quota_state.send(key=tenant_id.encode(), value=orjson.dumps(value))
                USAGE_QUOTA_UPDATES.inc()


def _load_quota(table: Any, tenant_id: str) -> tuple[int, QuotaState | None]:
    """The last folded offset of ``usage.billable`` and the counters, for one tenant."""
    value = table.data.get(tenant_id)
    if not value:
        return -1, None
    return int(value["offset"]), QuotaState.model_validate(value["state"])


def _housekeeping(s: UsageStream) -> None:
    app, seen = s.app, s.seen

    @s.seen_table.on_recover
    async def _reindex_seen() -> None:
        seen.reindex()

    @app.timer(60.0)
    async def expire_seen_ids() -> None:
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == USAGE_EVENTS}
        expired = seen.expire(time.time(), owned.__contains__)
        if expired:
            USAGE_SEEN_EXPIRED.inc(expired)
            log.info("forgot %d usage event ids older than the dedupe TTL", expired)

    @app.timer(5.0)
    async def report_lag() -> None:
        consumer = app.consumer
        committed = app.monitor.tp_committed_offsets or {}
        for tp in consumer.assignment():
            try:
                end = consumer.highwater(tp)
            except Exception:
                continue
            done = committed.get(tp)
            if end is not None and done is not None:
                CONSUMER_LAG.labels(s.settings.usage_stream_app_id, tp.topic, str(tp.partition)).set(max(0, end - done))
