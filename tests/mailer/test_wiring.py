"""`lotabots worker mailer`, `lotabots serve dev-smtp`, and `lotabots up` running them."""

from __future__ import annotations

from lotabots.cli import build_parser
from lotabots.settings import Settings
from lotabots.stack import _children


def test_cli_has_the_mailer_and_the_dev_smtp_server() -> None:
    parser = build_parser()
    assert parser.parse_args(["worker", "mailer"]).func.__name__ == "_worker_mailer"
    args = parser.parse_args(["serve", "dev-smtp", "--port", "2525"])
    assert args.func.__name__ == "_serve_dev_smtp" and args.port == 2525


def test_up_runs_the_mailer_and_the_dev_smtp_server_only_without_a_relay() -> None:
    dev = {c.name: c for c in _children(Settings())}
    assert dev["mailer"].argv == ["worker", "mailer"] and dev["mailer"].env["LOTABOTS_METRICS_PORT"] == "9105"
    assert dev["dev-smtp"].argv == ["serve", "dev-smtp"]
    assert list(dev)[-1] == "dev-smtp"  # stopped after the mailer
    relay = {c.name for c in _children(Settings(smtp_host="smtp.example.com"))}
    assert "mailer" in relay and "dev-smtp" not in relay
