"""Text + HTML bodies of the account mails, one template pair per `auth.events` type that mails someone.

Templates are `string.Template` (no dependency, no logic in templates); every value put into the HTML part
is HTML-escaped, the link included. Which events mail anybody is decided here: `MAILED_TYPES`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from string import Template

from schemas.auth_events import AuthEvent, AuthEventType, PasswordResetReason


class NotMailable(ValueError):
    """The event asks for a mail but lacks what the mail needs (recipient, link): a poison event."""


@dataclass(frozen=True)
class MailTemplate:
    subject: Template
    text: Template
    html: Template
    needs_link: bool = True


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


_HTML_FRAME = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>$subject</title></head>
<body style="font-family: sans-serif; line-height: 1.5; color: #222; max-width: 36em; margin: 2em auto;">
$body
<p style="color: #777; font-size: 0.9em;">&mdash; $product</p>
</body></html>
""")

_BUTTON = '<p><a href="$link" style="display: inline-block; padding: 0.6em 1.2em; background: #2557d6; ' \
          'color: #fff; text-decoration: none; border-radius: 4px;">$action</a></p>\n' \
          '<p style="font-size: 0.9em;">Or paste this address into your browser:<br><code>$link</code></p>'

VERIFY = MailTemplate(
    subject=Template("Confirm your email address for $product"),
    text=Template("""Hello,

please confirm that this address belongs to your $product account by opening this link:

$link

The link works once and expires at $expires.
If you did not create an account, ignore this mail: nothing happens without the link.

-- $product
"""),
    html=Template(f"""<p>Hello,</p>
<p>please confirm that this address belongs to your $product account.</p>
{_BUTTON}
<p>The link works once and expires at $expires.<br>
If you did not create an account, ignore this mail: nothing happens without the link.</p>"""),
)

RESET = MailTemplate(
    subject=Template("Reset your $product password"),
    text=Template("""Hello,

someone (hopefully you) asked to reset the password of your $product account. Choose a new one here:

$link

The link works once and expires at $expires. If you did not ask, ignore this mail: your password stays as it is.

-- $product
"""),
    html=Template(f"""<p>Hello,</p>
<p>someone (hopefully you) asked to reset the password of your $product account.</p>
{_BUTTON}
<p>The link works once and expires at $expires. If you did not ask, ignore this mail: your password stays as it is.</p>"""),
)

ADMIN_RESET = MailTemplate(
    subject=Template("Your $product password was reset by an administrator"),
    text=Template("""Hello,

an administrator of your organisation reset the password of your $product account: the old password no
longer works and every session was signed out. Choose a new password here:

$link

The link works once and expires at $expires.

-- $product
"""),
    html=Template(f"""<p>Hello,</p>
<p>an administrator of your organisation reset the password of your $product account: the old password no
longer works and every session was signed out.</p>
{_BUTTON}
<p>The link works once and expires at $expires.</p>"""),
)

INVITE = MailTemplate(
    subject=Template("You are invited to $product"),
    text=Template("""Hello,

you were invited to an organisation on $product. Choose your password to accept:

$link

The link works once and expires at $expires.

-- $product
"""),
    html=Template(f"""<p>Hello,</p>
<p>you were invited to an organisation on $product. Choose your password to accept.</p>
{_BUTTON}
<p>The link works once and expires at $expires.</p>"""),
)

EXISTING_ACCOUNT = MailTemplate(
    subject=Template("Someone tried to register with your address on $product"),
    text=Template("""Hello,

someone tried to create a $product account with this address, which already has one. Nothing was changed.
If it was you, sign in$at_site, or ask for a password reset if you forgot your password.
If it was not you, you can ignore this mail.

-- $product
"""),
    html=Template("""<p>Hello,</p>
<p>someone tried to create a $product account with this address, which already has one. Nothing was changed.</p>
<p>If it was you, sign in$at_site, or ask for a password reset if you forgot your password.
If it was not you, you can ignore this mail.</p>"""),
    needs_link=False,
)

# the event types the mailer mails about; the others (audit-only: password_changed, account_locked, ...) are skipped
MAILED_TYPES: dict[AuthEventType, MailTemplate] = {
    AuthEventType.EMAIL_VERIFICATION_REQUESTED: VERIFY,
    AuthEventType.PASSWORD_RESET_REQUESTED: RESET,
    AuthEventType.USER_INVITED: INVITE,
    AuthEventType.REGISTRATION_ATTEMPT_EXISTING_ACCOUNT: EXISTING_ACCOUNT,
}

_ACTIONS = {VERIFY: "Confirm my address", RESET: "Choose a new password", ADMIN_RESET: "Choose a new password",
            INVITE: "Accept the invitation"}


def template_for(event: AuthEvent) -> MailTemplate | None:
    """The template of this event, or None when the event type mails nobody."""
    template = MAILED_TYPES.get(event.type)
    if template is RESET and event.reason is PasswordResetReason.ADMIN_FORCED:
        return ADMIN_RESET
    return template


def _when(at: datetime | None) -> str:
    if at is None:
        return "its expiry"
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(event: AuthEvent, *, product: str, site_url: str = "") -> RenderedMail:
    """Subject, text and HTML of the mail for `event`. Raises NotMailable when a needed field is missing."""
    template = template_for(event)
    if template is None:
        raise NotMailable(f"event type {event.type.value} mails nobody")
    if not event.email:
        raise NotMailable(f"{event.type.value} event without an email address")
    if template.needs_link and not event.link:
        raise NotMailable(f"{event.type.value} event without a link")
    values = {"product": product, "link": event.link or "", "expires": _when(event.link_expires_at),
              "at_site": f" at {site_url}" if site_url else ""}
    subject = template.subject.substitute(values)
    escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
    escaped["action"] = _ACTIONS.get(template, "")
    body = template.html.substitute(escaped)  # one pass: a "$" inside a value is never expanded
    page = _HTML_FRAME.substitute(subject=html.escape(subject), body=body, product=escaped["product"])
    return RenderedMail(subject=subject, text=template.text.substitute(values), html=page)
