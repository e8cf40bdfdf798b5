"""`GET /v1/dev/mailbox`: only with the development SMTP server, only from loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from consumers.mail_compose import compose
from gateway.errors import install_error_handlers
from gateway.routers import dev_mailbox
from lotabots.dev_smtp import Mailbox
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent, AuthEventType


def _app(settings: Settings) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(dev_mailbox.router)
    app.state.settings = settings
    return app


async def _get(app: FastAPI, path: str, client_host: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get(path)


async def test_lists_and_reads_stored_mails_for_loopback_callers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    event = AuthEvent(event_id="aev_box", type=AuthEventType.EMAIL_VERIFICATION_REQUESTED, at=datetime.now(UTC),
                      email="ann@example.test", link="https://c.test/account/verify-email#token=abc",
                      link_expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert Mailbox(settings.dev_mail_dir).store(compose(event, settings).as_bytes())
    app = _app(settings)
    listing = (await _get(app, "/v1/dev/mailbox")).json()["data"]
    assert [m["to"] for m in listing] == ["ann@example.test"]
    mail = (await _get(app, f"/v1/dev/mailbox/{listing[0]['id']}")).json()
    assert "https://c.test/account/verify-email#token=abc" in mail["text"] and mail["html"].startswith("<!doctype")
    assert (await _get(app, "/v1/dev/mailbox/nope")).status_code == 404
    assert (await _get(app, "/v1/dev/mailbox", client_host="::1")).status_code == 200
    refused = await _get(app, "/v1/dev/mailbox", client_host="192.0.2.7")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "loopback_only"


async def test_is_off_with_a_relay_or_when_disabled(tmp_path: Path) -> None:
    for settings in (Settings(data_dir=tmp_path, smtp_host="smtp.example.com"),
                     Settings(data_dir=tmp_path, dev_mailbox=False)):
        response = await _get(_app(settings), "/v1/dev/mailbox")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
