"""The agent and its timers: a short loop over batches of a stream; the rules live in the screens it calls.

* ``usage-billing`` (``usage.events``): split (a message is one CloudEvent or a CloudEvents batch) →
  validate each fact → dedupe → price → ``usage.billable`` (one BillableBatch per tenant per batch);
  poison → ``usage.dlq`` (a whole message when it is not JSON, else the one bad fact with its index).
  The same pass folds each counted fact into its tenant's day/month counters (the ``usage-quota`` table,
  co-partitioned with ``usage.events``) → ``usage.quota-state``.

The agent uses ``take_events`` so a batch is acknowledged only after the agent handled all of it; Faust flushes
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
from schemas.usage import KIND_OF, QuotaState
from streams.app import UsageStream, UsageTopics
from streams.pricing import billable_json
from streams.quota import QuotaDelta, fold_quota, quota_fact
from streams.validate import Refusal, split_usage_message, validate_usage_fact

log = logging.getLogger(__name__)

BATCH_MAX = 5000
BATCH_WITHIN_S = 0.1
FACTS_PER_MESSAGE = 500  # keeps a billable message well under the broker's 1 MB message limit
CONSUMER_NAME = "usage-stream"
_DUPLICATES = USAGE_EVENTS_IN.labels("duplicate")


def dead_letter(message: Any, code: str, error: str, *, fact: Any = None, index: int | None = None) -> bytes:
    """The DLQ record of a poison message, or of one fact (``fact``, at ``index`` in a batch) of a message."""
    if fact is not None:
        raw = orjson.dumps(fact)
    else:
        raw = bytes(message.value) if isinstance(message.value, bytes | bytearray) else b""
    key = message.key.decode(errors="replace") if isinstance(message.key, bytes | bytearray) else None
    letter = DeadLetter(
        source_topic=message.topic, source_partition=message.partition, source_offset=message.offset, key=key,
        source_index=index, payload=raw.decode(errors="replace")[:1_000_000], error_code=code,
        error_message=error[:2000], consumer=CONSUMER_NAME, at=datetime.now(UTC),
    )
    return letter.model_dump_json().encode()


def billable_batch(tenant_id: str, facts: list[bytes]) -> bytes:
    """A BillableBatch's JSON from already-encoded facts (no second pass through the model)."""
    return b'{"schema_version":1,"tenant_id":' + orjson.dumps(tenant_id) + b',"facts":[' + b",".join(facts) + b"]}"


def register_agents(stream: UsageStream) -> None:
    _billing_agent(stream)
    _housekeeping(stream)


def _billing_agent(s: UsageStream) -> None:
    tiers, seen, topics = s.tiers, s.seen, s.topics

    @s.app.agent(topics.events, name="usage-billing")
    async def usage_billing(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            now = time.time()
            by_tenant: dict[str, list[bytes]] = {}
            quotas: dict[str, QuotaDelta] = {}
            kinds: dict[str, int] = {}
            for event in events:
                message = event.message
                values = split_usage_message(event.value)
                if isinstance(values, Refusal):
                    await _refuse(topics, dead_letter(message, values.code, values.message), values.code)
                    continue
                batched = len(values) > 1
                this_message: set[str] = set()  # the same id twice inside one batch is a duplicate too
                for index, value in enumerate(values):
                    fact = validate_usage_fact(value, tiers)
                    if isinstance(fact, Refusal):
                        letter = dead_letter(message, fact.code, fact.message, fact=value if batched else None,
                                             index=index if batched else None)
                        await _refuse(topics, letter, fact.code)
                        continue
                    if fact.id in this_message or seen.is_duplicate(fact.id, message.partition, message.offset):
                        _DUPLICATES.inc()
                        continue
                    this_message.add(fact.id)
                    seen.remember(message.partition, message.offset, fact.id)
                    by_tenant.setdefault(fact.data.tenant_id, []).append(
                        billable_json(fact, tiers.get(fact.data.tier).prices))
                    kind = KIND_OF[fact.type].value
                    kinds[kind] = kinds.get(kind, 0) + 1
                    counted = quota_fact(fact)
                    if counted is not None:
                        delta = quotas.get(counted.tenant_id)
                        if delta is None:
                            delta = quotas[counted.tenant_id] = QuotaDelta(message.partition)
                        delta.add(message.offset, counted)
            seen.flush(now)  # the batch's new ids: one changelog record per partition
            for tenant_id, state in _fold_quotas(s, quotas, datetime.now(UTC)):
                await topics.quota_state.send(key=tenant_id.encode(), value=state)
                USAGE_QUOTA_UPDATES.inc()
            for tenant_id, facts in by_tenant.items():
                for i in range(0, len(facts), FACTS_PER_MESSAGE):
                    await topics.billable.send(key=tenant_id.encode(),
                                               value=billable_batch(tenant_id, facts[i:i + FACTS_PER_MESSAGE]))
                USAGE_EVENTS_IN.labels("billable").inc(len(facts))
            for kind, n in kinds.items():
                USAGE_BILLABLE_OUT.labels(kind).inc(n)


async def _refuse(topics: UsageTopics, letter: bytes, code: str) -> None:
    await topics.dlq.send(value=letter)
    USAGE_DEAD_LETTERS.labels("stream", code).inc()
    USAGE_EVENTS_IN.labels("dead_lettered").inc()


def _fold_quotas(s: UsageStream, deltas: dict[str, QuotaDelta], now: datetime) -> list[tuple[str, bytes]]:
    """Fold a batch's quota facts into the per-tenant counters; the quota-state records to send.

    One table write and one quota-state record per tenant per batch. The table keeps the last folded
    ``usage.events`` offset with the counters (one record), so a message re-read after a crash is not
    folded twice: the counters are exact, like the bill.
    """
    table = s.quota_table
    out = []
    for tenant_id, delta in deltas.items():
        stored = table.data.get(tenant_id)
        state = QuotaState.model_validate(stored["state"]) if stored else None
        applied = stored["offset"] if stored and stored.get("partition") == delta.partition else -1
        days = delta.days_after(applied)
        if not days:
            continue
        for fact in days:
            state = fold_quota(state, fact, now)
        assert state is not None
        value = state.model_dump(mode="json")
        record = {"state": value, "partition": delta.partition, "offset": delta.last_offset}
        table.data[tenant_id] = record
        table.send_changelog(delta.partition, tenant_id, record)
        out.append((tenant_id, orjson.dumps(value)))
    return out


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
