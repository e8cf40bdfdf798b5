"""Usage, invoices and finance SQL through the gateway; poison usage events; the billing export command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from lotabots.kafka_io import make_producer
from lotabots.settings import Settings
from lotabots.usage_events import UsageEmitter
from tests.stack import REPO
from tests.usage.conftest import UsagePipeline

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Say hello."}]


async def wait_terminal(api: httpx.AsyncClient, request_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await api.get(f"/v1/requests/{request_id}")).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{request_id} not terminal")


async def billed_usage(api: httpx.AsyncClient, requests: int, prompt: int, completion: int,
                       timeout: float = 120) -> dict[str, Any]:
    """GET /v1/usage until it bills exactly these totals: `requests` is counted at admission, the tokens
    when each inference fact lands, so a count alone (or "some tokens") can hold with a fact missing."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await api.get("/v1/usage", params={"group_by": "day,model,tier,autonomy_level"})
        assert r.status_code == 200, r.text
        body = r.json()
        totals = body["totals"]
        if (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (requests, prompt, completion):
            return body
        await asyncio.sleep(0.5)
    raise AssertionError(f"usage never billed {requests} requests, {prompt}+{completion} tokens: {body}")


@pytest.fixture
async def used(api: httpx.AsyncClient, usage_pipeline: UsagePipeline) -> dict[str, Any]:
    """Two finished requests of a fresh pro tenant, and their usage once billed."""
    done = []
    for _ in range(2):
        r = await api.post("/v1/requests", json={"messages": QUESTION, "max_tokens": 3})
        assert r.status_code == 202, r.text
        done.append(await wait_terminal(api, r.json()["id"]))
    prompt = sum(d["usage"]["prompt_tokens"] for d in done)
    completion = sum(d["usage"]["completion_tokens"] for d in done)
    usage = await billed_usage(api, 2, prompt, completion)
    return {"requests": done, "usage": usage, "prompt": prompt, "completion": completion}


async def test_usage_is_the_tenants_own_grouped_by_day_model_tier_and_autonomy(used: dict[str, Any]) -> None:
    usage = used["usage"]
    today = datetime.now(UTC).date().isoformat()
    assert usage["totals"]["prompt_tokens"] == used["prompt"]
    assert usage["totals"]["completion_tokens"] == used["completion"]
    inference = [row for row in usage["data"] if row["model"]]
    assert {(r["day"], r["tier"], r["autonomy_level"]) for r in inference} == {(today, "pro", "agent")}
    assert all(r["model"] == inference[0]["model"] for r in inference)


async def test_the_invoice_prices_the_month_at_the_tier_prices(api: httpx.AsyncClient, used: dict[str, Any]) -> None:
    from lotabots.tiers import get_tier_config

    period = datetime.now(UTC).strftime("%Y-%m")
    r = await api.get("/v1/billing/invoices", params={"period": period})
    assert r.status_code == 200, r.text
    invoice = r.json()
    lines = {line["item"]: line for line in invoice["lines"]}
    p = get_tier_config().get("pro").prices
    assert lines["requests"]["quantity"] == 2 and Decimal(lines["requests"]["amount"]) == p.per_request * 2
    assert lines["input_tokens"]["quantity"] == used["prompt"]
    expected = p.per_request * 2 + p.per_1k_input_tokens * used["prompt"] / 1000 + \
        p.per_1k_output_tokens * used["completion"] / 1000
    assert Decimal(invoice["total"]) == expected
    bad = await api.get("/v1/billing/invoices", params={"period": "2026-13"})
    assert bad.status_code == 422


@pytest.mark.parametrize("sql, status, code", [
    ("INSERT INTO lotabots_usage.usage_events (tenant_id) VALUES ('x')", 403, "read_only"),
    ("ALTER TABLE lotabots_usage.usage_daily DELETE WHERE 1", 403, "read_only"),
    ("DROP TABLE lotabots_usage.usage_events", 403, "read_only"),
    ("SELECT * FROM system.tables", 403, "database_not_allowed"),
    ("SELECT * FROM other_db.secrets", 403, "database_not_allowed"),
])
async def test_finance_sql_refusals_have_stable_codes(api: httpx.AsyncClient, usage_pipeline: UsagePipeline,
                                                      sql: str, status: int, code: str) -> None:
    r = await api.post("/v1/analytics/sql", json={"sql": sql})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


async def test_finance_sql_tokens_per_tenant_per_day_are_right_and_only_the_callers(
    api: httpx.AsyncClient, used: dict[str, Any], pro_tenant: tuple[str, str],
) -> None:
    r = await api.post("/v1/analytics/sql", json={"sql": (
        "SELECT tenant_id, day, sum(prompt_tokens + completion_tokens) AS tokens, sum(requests) AS requests "
        "FROM lotabots_usage.usage_daily GROUP BY tenant_id, day ORDER BY day")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["tenant_id", "day", "tokens", "requests"]
    today = datetime.now(UTC).date().isoformat()
    assert body["rows"] == [[pro_tenant[0], today, used["prompt"] + used["completion"], 2]]


async def test_usage_reads_need_their_scopes(stack: Any, usage_pipeline: UsagePipeline, engine: Any) -> None:
    from gateway.api_keys import create_api_key
    from tests.conftest import _new_tenant

    tenant_id, _ = await _new_tenant(engine, "pro")
    key = await create_api_key(engine, tenant_id, name="no-billing", scopes=("requests:read",))
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key.key}"}) as c:
        for method, path, kw in (("GET", "/v1/usage", {}),
                                 ("GET", "/v1/billing/invoices", {"params": {"period": "2026-01"}}),
                                 ("POST", "/v1/analytics/sql", {"json": {"sql": "SELECT 1"}})):
            r = await c.request(method, path, **kw)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope"), (path, r.text)


async def test_poison_usage_events_go_to_the_dlq_and_the_pipeline_continues(
    stack: Any, usage_pipeline: UsagePipeline,
) -> None:
    settings = Settings(kafka_bootstrap=stack.env["LOTABOTS_KAFKA_BOOTSTRAP"])
    tenant = f"ten_poison_{uuid.uuid4().hex[:8]}"
    producer = make_producer(settings, client_id="test-poison")
    await producer.start()
    try:
        garbage = await producer.send_and_wait("usage.events", b"\x00not a cloudevent", key=tenant.encode())
        unknown_tier = orjson.dumps({
            "specversion": "1.0", "id": f"req_{tenant}:accepted", "source": "/t", "type": "lotabots.request.accepted",
            "time": "2026-01-01T00:00:00Z", "data": {"tenant_id": tenant, "tier": "platinum", "request_id": "r",
                                                     "max_tokens_reserved": 1}})
        unpriceable = await producer.send_and_wait("usage.events", unknown_tier, key=tenant.encode())
        await UsageEmitter(producer).request_accepted(tenant_id=tenant, tier="pro", request_id=f"req_{tenant}",
                                                      max_tokens_reserved=5)
        # a CloudEvents batch: a bad fact between two good ones, and the same good fact twice
        good = orjson.loads(unknown_tier)
        good.update(id=f"req_{tenant}_b:accepted", data={**good["data"], "tier": "pro", "request_id": "b"})
        bad = {**good, "id": f"req_{tenant}_x:accepted", "data": {**good["data"], "max_tokens_reserved": -1}}
        batched = await producer.send_and_wait("usage.events", orjson.dumps([good, bad, good]), key=tenant.encode(),
                                             headers=[("content-type", b"application/cloudevents-batch+json")])
    finally:
        await producer.stop()
    # the valid facts after the poison were billed, the repeated one once
    expected = [[f"req_{tenant}:accepted", 1], [f"req_{tenant}_b:accepted", 1]]
    deadline = time.monotonic() + 120
    rows: list[Any] = []
    while time.monotonic() < deadline and rows != expected:
        rows = usage_pipeline.sql("SELECT event_id, requests FROM lotabots_usage.usage_events ORDER BY event_id",
                                  tenant)["rows"]
        if rows != expected:
            await asyncio.sleep(0.5)
    assert rows == expected, (rows, usage_pipeline.stack.tail("usage-stream", 3000))

    dlq = AIOKafkaConsumer("usage.dlq", bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                           group_id=None)
    await dlq.start()
    # every letter of ours, not "until a quiet poll": the DLQ and the billed rows are different topics, so a
    # letter can land after the rows above are visible (and the shared topic holds other tests' letters)
    wanted = {(m.partition, m.offset) for m in (garbage, unpriceable, batched)}
    mine: dict[tuple[int, int], Any] = {}
    deadline = time.monotonic() + 120
    try:
        while not wanted <= mine.keys():
            assert time.monotonic() < deadline, f"usage.dlq: letters for {sorted(mine)}, wanted {sorted(wanted)}"
            batch = await dlq.getmany(timeout_ms=1000)
            for letter in (orjson.loads(r.value) for records in batch.values() for r in records):
                if letter["source_topic"] == "usage.events":
                    mine[(letter["source_partition"], letter["source_offset"])] = letter
    finally:
        await dlq.stop()
    assert mine[(garbage.partition, garbage.offset)]["error_code"] == "invalid_usage_event"
    assert mine[(unpriceable.partition, unpriceable.offset)]["error_code"] == "unknown_tier"
    assert mine[(unpriceable.partition, unpriceable.offset)]["key"] == tenant
    in_batch = mine[(batched.partition, batched.offset)]  # only the bad fact, with its place in the batch
    assert (in_batch["error_code"], in_batch["source_index"]) == ("invalid_usage_event", 1)
    assert orjson.loads(in_batch["payload"])["id"] == f"req_{tenant}_x:accepted"


async def test_billing_export_writes_the_months_invoice_lines(
    stack: Any, used: dict[str, Any], pro_tenant: tuple[str, str], tmp_path: Any,
) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")
    out = tmp_path / "lines.csv"
    for fmt, target in (("jsonl", None), ("csv", out)):
        argv = [sys.executable, "-m", "lotabots.cli", "billing", "export", "--period", period, "--format", fmt]
        if target:
            argv += ["--output", str(target)]
        done = await asyncio.to_thread(subprocess.run, argv, env=stack.env, cwd=REPO, capture_output=True,
                                       text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        if fmt == "jsonl":
            lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    mine = {line["item"]: line for line in lines if line["tenant_id"] == pro_tenant[0]}
    assert mine["requests"]["quantity"] == 2 and mine["input_tokens"]["quantity"] == used["prompt"]
    assert mine["output_tokens"]["quantity"] == used["completion"] and mine["requests"]["period"] == period
    csv_text = out.read_text().splitlines()
    assert csv_text[0] == "tenant_id,period,tier,item,quantity,amount"
    assert sum(1 for row in csv_text if row.startswith(pro_tenant[0] + ",")) == 3
