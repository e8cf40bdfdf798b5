"""Browser fixtures: Debian's headless Chromium driven by Selenium (chromium-driver), and a reader of the
verification mail (the `auth.events` topic on the real broker, as the mailer reads it)."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
def mailbox(stack: Any) -> Mailbox:
    return Mailbox(stack.env["LOTABOTS_KAFKA_BOOTSTRAP"])
