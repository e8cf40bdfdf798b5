"""Prometheus metrics of the auth service."""

from __future__ import annotations

from prometheus_client import Counter

LOGINS = Counter("lotabots_auth_logins_total", "login attempts by outcome", ["outcome"])
LOCKOUTS = Counter("lotabots_auth_lockouts_total", "lockouts started", ["scope"])
REFRESH_REUSE = Counter("lotabots_auth_refresh_reuse_total", "refresh tokens presented twice (family revoked)")
AUTH_EVENTS_FAILED = Counter("lotabots_auth_events_failed_total", "auth events not delivered", ["type"])
