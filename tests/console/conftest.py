"""Browser fixtures: Debian's headless Chromium driven by Selenium (chromium-driver), and the mail: the stack's
mailer sends it over SMTP to a development SMTP server (`mailbox`, read through `/v1/dev/mailbox`); `Mailbox`
reads the `auth.events` topic on the real broker, as the mailer does."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the console browser tests need Debian's chromium and chromium-driver: run scripts/bootstrap.sh test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Mailbox:
    """The verification links on `auth.events` (read from the start each time: the topic is small)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def verification(self, email: str, timeout_s: float = 60) -> tuple[str, str]:
        """(token, tenant id) of the newest verification mail to `email`."""
        return asyncio.run(self._find(email, timeout_s))

    async def _find(self, email: str, timeout_s: float) -> tuple[str, str]:
        from aiokafka import AIOKafkaConsumer

        from schemas.auth_events import AuthEvent, AuthEventType
        from schemas.topics import AUTH_EVENTS

        consumer = AIOKafkaConsumer(AUTH_EVENTS, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for m in messages:
                        event = AuthEvent.model_validate_json(m.value)
                        if (event.type == AuthEventType.EMAIL_VERIFICATION_REQUESTED and event.email == email
                                and event.link and event.tenant_id):
                            return event.link.rsplit("token=", 1)[1], event.tenant_id
            raise AssertionError(f"no verification mail for {email}")
        finally:
            await consumer.stop()


class SmtpMailbox(Mailbox):
    """The mails as they arrived over SMTP: the stack's mailer (`worker mailer`) sent them to the development
    SMTP server (`serve dev-smtp`), read back through the gateway's development mailbox (`/v1/dev/mailbox`)."""

    def __init__(self, stack: Any) -> None:
        super().__init__(stack.env["LOTABOTS_KAFKA_BOOTSTRAP"])
        self.stack = stack

    def link(self, email: str, path: str, timeout_s: float = 90, after: set[str] | None = None) -> tuple[str, str]:
        """(mail id, link) of the newest mail to `email` whose link goes to `path` (mails in `after` skipped)."""
        import re

        import httpx

        pattern = re.compile(r"https?://\S+?" + re.escape(path) + r"#token=[A-Za-z0-9_\-]+")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            mails = httpx.get(f"{self.stack.gateway_url}/v1/dev/mailbox?limit=500", timeout=10).json()["data"]
            for m in sorted(mails, key=lambda m: m["received_at"], reverse=True):
                if email.lower() not in m["to"].lower() or m["id"] in (after or set()):
                    continue
                body = httpx.get(f"{self.stack.gateway_url}/v1/dev/mailbox/{m['id']}", timeout=10).json()
                found = pattern.search(body["text"] or "")
                if found:
                    return m["id"], found.group(0)
            time.sleep(0.25)  # polling the mailbox for the mail, not a wait for a state under test
        raise AssertionError(f"no mail to {email} with a {path} link arrived over SMTP")

    def verification(self, email: str, timeout_s: float = 90) -> tuple[str, str]:
        """(token, tenant id) from the verification mail that arrived over SMTP."""
        _, link = self.link(email, "/account/verify-email", timeout_s)
        return link.rsplit("token=", 1)[1], tenant_of(self.stack, email)


def tenant_of(stack: Any, email: str) -> str:
    import sqlalchemy as sa

    from lotabots.db import make_engine
    from schemas.auth_tables import User

    async def run() -> str:
        engine = make_engine(stack.env["LOTABOTS_DATABASE_URL"])
        try:
            async with engine.connect() as conn:
                return (await conn.execute(sa.select(User.tenant_id).where(User.email == email.lower()))).scalar_one()
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture(scope="package")
def stack_mailer(stack: Any) -> Iterator[Any]:
    """The mailer and a development SMTP server for the console tests (as `lotabots up` runs them): mail
    goes over real SMTP into `<data_dir>/mail`, which the gateway's development mailbox lists.

    Stopped when the console tests end: the mail ledger is the shared database's, so a mailer left running
    would claim the mail suite's events (in their own consumer groups) and send them here instead."""
    from tests.mailer.conftest import start_group_at_end
    from tests.services import free_ports

    port = str(free_ports(1)[0])
    group = f"console-mailer-{os.getpid()}"
    asyncio.run(start_group_at_end(stack.env["LOTABOTS_KAFKA_BOOTSTRAP"], group))
    smtp = stack.spawn("dev-smtp", "serve", "dev-smtp", "--port", port)
    mailer = stack.spawn("mailer", "worker", "mailer", extra_env={
        "LOTABOTS_DEV_SMTP_PORT": port, "LOTABOTS_MAILER_GROUP": group,
        "LOTABOTS_MAILER_RETRY_INITIAL_S": "0.2", "LOTABOTS_MAILER_RETRY_MAX_S": "1"})
    yield stack
    mailer.stop()
    smtp.stop()


@pytest.fixture
def mailbox(stack_mailer: Any) -> SmtpMailbox:
    return SmtpMailbox(stack_mailer)
