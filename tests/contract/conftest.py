"""The contract suite's stack: a real gateway, result writer and inference worker (the real model) on a Kafka
broker and a PostgreSQL database of their own, the session's usage service for usage reads, and signed-in
users of each role.

Its own database because a contract run sends every kind of request a client could send, wrong logins
included: the login throttle counts failures per client address in the database, and 127.0.0.1 locked out
would refuse the rest of the session's sign-ins. Its own broker because its workers' consumer groups
(`results-writer`, `inference.free`) would otherwise share partitions with the session's. Its tier file
caps `max_tokens` at 8 and lifts the free tier's rate limits and quotas, so the many submits of a run
finish quickly (the synchronous OpenAI routes wait for them) and most reach validation rather than 429.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from lotabots.db import migrate
from lotabots.tiers import load_tier_config
from lotabots.topic_admin import sync_topics
from schemas.auth_events import AuthEvent, AuthEventType
from schemas.topics import AUTH_EVENTS, topic_catalogue
from tests.auth.conftest import _psql
from tests.services import free_ports, kafka_service
from tests.stack import Stack

PASSWORD = "contract-Pass-1234!"
_emails = itertools.count()


@dataclass
class ContractGateway:
    url: str
    stack: Stack
    tenant_id: str = ""
    tokens: dict[str, str] = field(default_factory=dict)  # role -> access token
    api_key: str = ""  # an API key with the member's scopes (keys are credentials too)

    def client(self, role: str = "owner") -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.tokens[role]}"})


def _link_token(bootstrap: str, kind: AuthEventType, email: str, timeout_s: float = 60) -> str:
    """The one-time token of the mail `kind` to `email`, read from auth.events as the mailer reads it."""

    async def read() -> str:
        consumer = AIOKafkaConsumer(AUTH_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            event = AuthEvent.model_validate_json(record.value)
                            if event.type == kind and event.email == email and event.link:
                                return event.link.rsplit("token=", 1)[1]
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _login(url: str, email: str) -> str:
    r = httpx.post(f"{url}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


CONTRACT_TIERS = """
[tiers.free]
request_partitions = 2
workers_min = 1
workers_max = 2
max_tokens_cap = 8
priority = 100
[tiers.free.scaling]
lag_threshold = 8
activation_lag_threshold = 0
[tiers.free.rate_limits]
requests_per_minute = 100000
concurrent_requests = 64
[tiers.free.quotas]
tokens_per_day = 100000000
tokens_per_month = 1000000000
[tiers.free.prices]
per_request = "0"
per_1k_input_tokens = "0"
per_1k_output_tokens = "0"
[tiers.free.k8s]
cpu = "8"
memory = "16Gi"
gpus = 0
pods = 20
"""


@pytest.fixture(scope="package")
def contract_gateway(stack_env: dict[str, str], postgres: Any, session_tmp: Path,
                     usage_pipeline: Any) -> Iterator[ContractGateway]:
    root = session_tmp / "contract"
    root.mkdir(exist_ok=True)
    tiers_file = root / "tiers.toml"
    tiers_file.write_text(CONTRACT_TIERS)
    with kafka_service(root) as kafka:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(load_tier_config(tiers_file))))
        yield from _contract_gateway(stack_env, postgres, root, kafka.bootstrap, tiers_file)


def _contract_gateway(stack_env: dict[str, str], postgres: Any, root: Path, bootstrap: str,
                      tiers_file: Path) -> Iterator[ContractGateway]:
    base = make_url(postgres.url)
    name = f"contract_{os.getpid()}"
    _psql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    database_url = base.set(database=name).render_as_string(hide_password=False)
    migrate(database_url)
    port = free_ports(1)[0]
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    env = {**stack_env, "LOTABOTS_DATABASE_URL": database_url, "LOTABOTS_GATEWAY_PORT": str(port),
           "LOTABOTS_KAFKA_BOOTSTRAP": bootstrap, "LOTABOTS_TIERS_FILE": str(tiers_file),
           "LOTABOTS_DATA_DIR": str(root / "data"), "LOTABOTS_AUTH_BCRYPT_ROUNDS": "4",
           # under schemathesis' 120 s request timeout: a long-poll or a synchronous OpenAI call never outlasts it
           "LOTABOTS_LONG_POLL_MAX_S": "5", "LOTABOTS_OPENAI_WAIT_MAX_S": "100"}
    stack = Stack(env, logs, f"http://127.0.0.1:{port}")
    stack.spawn("gateway", "serve", "gateway")
    stack.spawn("results", "worker", "results")
    stack.spawn("inference-free", "worker", "inference", "--tier", "free")
    try:
        stack.wait_gateway()
        gw = ContractGateway(stack.gateway_url, stack)

        owner = f"contract-owner-{os.getpid()}-{next(_emails)}@example.com"
        r = httpx.post(f"{gw.url}/v1/auth/register", timeout=30,
                       json={"email": owner, "password": PASSWORD, "tenant_name": "contract"})
        assert r.status_code == 202, r.text
        token = _link_token(bootstrap, AuthEventType.EMAIL_VERIFICATION_REQUESTED, owner)
        assert httpx.post(f"{gw.url}/v1/auth/verify-email", json={"token": token}, timeout=30).status_code == 204
        gw.tokens["owner"] = _login(gw.url, owner)
        with gw.client("owner") as client:
            me = client.get("/v1/auth/me").json()
            gw.tenant_id = me["tenant_id"]
            for role in ("member", "finance"):
                email = f"contract-{role}-{os.getpid()}-{next(_emails)}@example.com"
                r = client.post("/v1/users", json={"email": email, "role": role})
                assert r.status_code == 201, r.text
                invite = _link_token(bootstrap, AuthEventType.USER_INVITED, email)
                r = httpx.post(f"{gw.url}/v1/auth/password/reset", timeout=30,
                               json={"token": invite, "new_password": PASSWORD})
                assert r.status_code == 204, r.text
                gw.tokens[role] = _login(gw.url, email)
            r = client.post("/v1/api-keys", json={"name": "contract", "scopes": ["requests:write", "requests:read",
                                                                                 "usage:read"]})
            assert r.status_code == 201, r.text
            gw.api_key = r.json()["key"]
        yield gw
    finally:
        stack.stop_all()
        _psql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

