"""`GET /v1/dev/mailbox[/{id}]`: the mails the development SMTP server stored (docs/mailer.md).

Development only: it answers 404 unless the development SMTP server is in use (LOTABOTS_SMTP_HOST empty)
and `dev_mailbox` is on, and 403 to any caller not on the loopback interface. It takes no credential on
purpose: its use is reading the verification mail of an account that cannot sign in yet. The mails hold
live links, so it is never reachable when a real relay is configured.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request

from gateway.errors import ApiError
from lotabots.dev_smtp import Mailbox
from lotabots.settings import Settings

# Not in the OpenAPI document: a development aid (off unless the development SMTP server is in use, and
# loopback only), not part of the public API that clients and generated SDKs build on.
router = APIRouter(tags=["development"], include_in_schema=False)


def _mailbox(request: Request) -> Mailbox:
    settings: Settings = request.app.state.settings
    if not (settings.smtp_is_dev and settings.dev_mailbox):
        raise ApiError(404, "not_found", "the development mailbox is off (an SMTP relay is configured)")
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiError(403, "loopback_only", "the development mailbox answers callers on this machine only")
    return Mailbox(settings.dev_mail_dir)


@router.get("/v1/dev/mailbox")
async def list_mails(request: Request, limit: int = 50) -> dict[str, Any]:
    mails = _mailbox(request).list()[: max(1, min(limit, 500))]
    return {"data": [{"id": m.id, "message_id": m.message_id, "from": m.sender, "to": m.to, "subject": m.subject,
                      "date": m.date, "size": m.size, "received_at": m.received_at} for m in mails]}


@router.get("/v1/dev/mailbox/{mail_id}")
async def read_mail(request: Request, mail_id: str) -> dict[str, Any]:
    msg = _mailbox(request).read(mail_id)
    if msg is None:
        raise ApiError(404, "mail_not_found", "no such mail in the development mailbox")
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return {"id": mail_id, "message_id": str(msg.get("Message-ID", "")), "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")), "subject": str(msg.get("Subject", "")), "date": str(msg.get("Date", "")),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None}
