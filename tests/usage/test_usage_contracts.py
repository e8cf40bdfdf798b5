"""Usage wire contracts: CloudEvents shape, deterministic ids, exported JSON Schemas, the emitter's fast path."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.compat import incompatibilities
from schemas.events import json_schema_of
from schemas.export import schema_path
from schemas.usage import (
    USAGE_WIRE_MODELS,
    InferenceCompletedData,
    RequestAcceptedData,
    UsageEvent,
    accepted_event_id,
    inference_event_id,
    usage_message_events,
)

EXPORTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"
NOW = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize("model", USAGE_WIRE_MODELS, ids=lambda m: m.SCHEMA_NAME)
def test_usage_models_match_their_exported_schema(model) -> None:  # type: ignore[no-untyped-def]
    path = schema_path(EXPORTED, model.SCHEMA_NAME, model.SCHEMA_VERSION)
    assert path.exists(), f"{path.name} missing: run `lotabots schemas export`"
    committed = json.loads(path.read_text())
    assert incompatibilities(committed, json_schema_of(model)) == []
    assert committed == json_schema_of(model), "re-run `lotabots schemas export`"


def test_event_ids_are_one_per_billable_fact() -> None:
    assert accepted_event_id("req_1") == "req_1:accepted"
    assert inference_event_id("req_1") == "req_1:inference"
    assert accepted_event_id("req_1") != inference_event_id("req_1")


def test_data_is_validated_against_the_model_its_type_names() -> None:
    accepted = {"tenant_id": "t", "tier": "pro", "request_id": "r", "max_tokens_reserved": 8}
    event = UsageEvent(id="r:accepted", source="/g", type="lotabots.request.accepted", time=NOW, data=accepted)
    assert isinstance(event.data, RequestAcceptedData)
    with pytest.raises(ValidationError):  # accepted data under the inference type: tokens missing
        UsageEvent(id="r:inference", source="/g", type="lotabots.inference.completed", time=NOW, data=accepted)


def test_time_without_an_offset_is_refused() -> None:
    with pytest.raises(ValidationError):
        UsageEvent(id="r:accepted", source="/g", type="lotabots.request.accepted", time=datetime(2026, 1, 1),
                   data={"tenant_id": "t", "tier": "pro", "request_id": "r", "max_tokens_reserved": 8})


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValidationError):
        InferenceCompletedData(tenant_id="t", tier="pro", request_id="r", model="m", prompt_tokens=-1,
                               completion_tokens=1, latency_ms=1, finish_reason="stop", status="succeeded")


class _Recorder:
    """A producer that records what it is given; its acks resolve at once, or fail with ``fail``."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.partitions: list[int] = []
        self.headers: list[Any] = []
        self.fail = fail

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(8))

    async def send(self, topic: str, value: bytes, key: bytes, partition: int | None = None,
                   headers: Any = None) -> asyncio.Future[None]:
        self.sent.append((topic, value, key))
        self.partitions.append(partition if partition is not None else -1)
        self.headers.append(headers)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            done.set_exception(self.fail)
        else:
            done.set_result(None)
        return done


async def test_facts_of_one_loop_turn_leave_as_one_batch_per_partition() -> None:
    from lotabots.usage_events import UsageEmitter, tenant_partition

    producer = _Recorder()
    emitter = UsageEmitter(producer)  # type: ignore[arg-type]
    tenants = [f"ten_{i}" for i in range(40)]
    acks = [await emitter.send_request_accepted(tenant_id=t, tier="pro", request_id=f"req_{t}", max_tokens_reserved=8)
            for t in tenants]
    await asyncio.gather(*acks)
    assert len(producer.sent) == len({tenant_partition(t.encode(), 8) for t in tenants}) < len(tenants)
    seen = []
    for (topic, value, key), partition, headers in zip(producer.sent, producer.partitions, producer.headers,
                                                       strict=True):
        facts = usage_message_events(value)
        assert topic == "usage.events" and tenant_partition(key, 8) == partition
        assert all(tenant_partition(f["data"]["tenant_id"].encode(), 8) == partition for f in facts)
        kind = "application/cloudevents-batch+json" if len(facts) > 1 else "application/cloudevents+json"
        assert headers == [("content-type", kind.encode())]
        seen += [UsageEvent.model_validate(f).id for f in facts]
    assert sorted(seen) == sorted(f"req_{t}:accepted" for t in tenants)


async def test_a_failed_batch_fails_every_fact_in_it() -> None:
    from lotabots.usage_events import UsageEmitter

    emitter = UsageEmitter(_Recorder(fail=RuntimeError("broker gone")))  # type: ignore[arg-type]
    acks = [await emitter.send_request_accepted(tenant_id="ten_a", tier="pro", request_id=f"req_{i}",
                                                max_tokens_reserved=8) for i in range(3)]
    results = await asyncio.gather(*acks, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3


async def test_accepted_fast_path_writes_a_valid_cloudevent_keyed_by_tenant() -> None:
    from lotabots.usage_events import UsageEmitter

    producer = _Recorder()
    naive = datetime(2026, 5, 1, 12, 0, 0)  # SQLite hands back naive UTC timestamps
    await UsageEmitter(producer).request_accepted(  # type: ignore[arg-type]
        tenant_id="ten_a", tier="pro", request_id="req_x", max_tokens_reserved=32, api_key_id="key_1", at=naive)
    topic, value, key = producer.sent[0]
    event = UsageEvent.model_validate_json(value)
    assert (topic, key) == ("usage.events", b"ten_a")
    assert event.id == "req_x:accepted" and event.specversion == "1.0" and event.subject == "req_x"
    assert event.time == naive.replace(tzinfo=UTC)
    assert isinstance(event.data, RequestAcceptedData) and event.data.api_key_id == "key_1"


async def test_inference_and_rejection_facts_are_valid_cloudevents() -> None:
    from lotabots.usage_events import UsageEmitter

    producer = _Recorder()
    emitter = UsageEmitter(producer)  # type: ignore[arg-type]
    await emitter.inference_completed(tenant_id="ten_a", tier="free", request_id="req_y", model="m",
                                      prompt_tokens=7, completion_tokens=3, latency_ms=12, finish_reason="length",
                                      status="succeeded")
    await emitter.request_rejected(tenant_id="ten_a", tier="free", reason="rate_limited")
    await emitter.request_rejected(tenant_id="ten_a", tier="free", reason="rate_limited")
    events = [UsageEvent.model_validate_json(v) for _, v, _ in producer.sent]
    assert events[0].id == "req_y:inference" and events[0].data.autonomy_level == "agent"  # type: ignore[union-attr]
    assert events[1].id != events[2].id, "each refusal is its own fact"
