"""Fixtures of the mailer suite: a real aiosmtpd server per test, real Kafka and PostgreSQL, mailer processes.

The SMTP server is the development server's own handler (lotabots/dev_smtp.py: one stored .eml per
Message-ID) run by aiosmtpd's threaded Controller on a free loopback port, with a count of every DATA it
accepted (duplicates included), so a test sees both what a Message-ID-deduping receiver keeps and what
went over the wire. Each test gets its own consumer group, started at the end of `auth.events`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiosmtpd.controller import Controller

from consumers.consumer_lag import LagReader
from lotabots.dev_smtp import Mailbox, MailboxHandler
from schemas.topics import AUTH_EVENTS
from tests.services import free_ports
from tests.stack import StackProcess

REJECT_PREFIX = "reject-"  # the test server answers 550 to RCPT TO:<reject-...>


class RecordingHandler(MailboxHandler):
    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(mailbox)
        self.lock = threading.Lock()
        self.raw: Counter[str] = Counter()  # Message-ID -> DATA transactions accepted

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address.startswith(REJECT_PREFIX):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        mid = str(BytesHeaderParser(policy=policy.default).parsebytes(envelope.original_content or envelope.content)
                  .get("Message-ID", ""))
        with self.lock:
            self.raw[mid] += 1
        return answer


class SmtpServer:
    """A real SMTP server on a fixed loopback port that a test can stop ("down") and start again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_ports(1)[0]
        self.mailbox = Mailbox(directory)
        self.handler = RecordingHandler(self.mailbox)
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def stored(self, message_ids: set[str]) -> dict[str, int]:
        """Message-ID -> stored mails (files), for the given ids."""
        found: Counter[str] = Counter(m.message_id for m in self.mailbox.list() if m.message_id in message_ids)
        return dict(found)

    @property
    def accepted(self) -> int:
        return self.handler.received


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path / "mailbox")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mail_env(session_tmp: Path, postgres, kafka_topics) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from lotabots.db import migrate

    migrate(postgres.url)
    data = session_tmp / "mailer-data"
    data.mkdir(exist_ok=True)
    return {
        **os.environ,
        "LOTABOTS_DATA_DIR": str(data),
        "LOTABOTS_DATABASE_URL": postgres.url,
        "LOTABOTS_KAFKA_BOOTSTRAP": kafka_topics.bootstrap,
        "LOTABOTS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOTABOTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "LOTABOTS_SMTP_HOST": "127.0.0.1",
        "LOTABOTS_SMTP_TLS": "none",
        "LOTABOTS_MAILER_RETRY_INITIAL_S": "0.2",
        "LOTABOTS_MAILER_RETRY_MAX_S": "1",
        "LOTABOTS_PUBLIC_BASE_URL": "https://console.test",
        "LOTABOTS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


class MailerProcesses:
    """Mailer processes of one test: one consumer group, one SMTP server; stopped by PID at the end."""

    def __init__(self, env: dict[str, str], smtp: SmtpServer, log_dir: Path) -> None:
        self.group = f"mailer-test-{uuid.uuid4().hex[:10]}"
        self.env = {**env, "LOTABOTS_SMTP_PORT": str(smtp.port), "LOTABOTS_MAILER_GROUP": self.group}
        self.log_dir = log_dir
        self.started: list[StackProcess] = []

    def spawn(self, name: str = "mailer", **extra: str) -> StackProcess:
        p = StackProcess(f"{name}-{len(self.started)}", ["worker", "mailer"], {**self.env, **extra},
                         self.log_dir / f"{name}-{len(self.started)}.log")
        self.started.append(p.start())
        return p

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text(errors='replace')[-3000:]}" for p in self.started
                         if p.log.exists())

    def stop_all(self) -> None:
        for p in self.started:
            p.stop()


@pytest.fixture
async def mailers(mail_env: dict[str, str], smtp: SmtpServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    m = MailerProcesses(mail_env, smtp, tmp_path)
    await start_group_at_end(mail_env["LOTABOTS_KAFKA_BOOTSTRAP"], m.group)
    yield m
    m.stop_all()


@pytest.fixture
async def producer(mail_env: dict[str, str]):  # type: ignore[no-untyped-def]
    p = AIOKafkaProducer(bootstrap_servers=mail_env["LOTABOTS_KAFKA_BOOTSTRAP"], acks="all", enable_idempotence=True)
    await p.start()
    yield p
    await p.stop()


async def start_group_at_end(bootstrap: str, group: str) -> None:
    """Commit `group`'s offsets at the end of auth.events: its mailer sees only what the test publishes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(AUTH_EVENTS, p) for p in sorted(consumer.partitions_for_topic(AUTH_EVENTS) or
                                                                 await _partitions(consumer))]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer) -> set[int]:
    from lotabots.kafka_io import topic_partitions

    return {tp.partition for tp in await topic_partitions(consumer, AUTH_EVENTS, timeout_s=30)}


async def group_caught_up(bootstrap: str, group: str) -> bool:
    """Every auth.events offset is committed by `group` (each record's mail recorded or dead-lettered)."""
    reader = LagReader(bootstrap, client_id="mailer-tests")
    await reader.start()
    try:
        lag = await reader.read(group, AUTH_EVENTS)
    finally:
        await reader.close()
    return all(p.committed >= 0 for p in lag.partitions) and lag.total == 0


async def wait_until(probe: Any, timeout: float = 120, interval: float = 0.1, what: str = "") -> Any:
    """Call `probe` (sync or async) until it returns something truthy; fail loudly after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what or 'condition'} not met in {timeout}s (last: {last!r})")
