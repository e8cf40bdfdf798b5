"""``lotabots auth ...``: signing-key rotation, platform operators, tenant tiers (see docs/auth.md).

lotabots/cli.py calls ``register(subparsers)``; every sub-command sets ``args.func``, a callable taking the
parsed namespace and returning the process exit code. ``lotabots serve auth`` is wired by cli.py itself
(uvicorn on ``gateway.auth.app:create_auth_app``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from lotabots.settings import Settings, get_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``auth`` command group to a top-level argparse sub-parser set."""
    auth: argparse.ArgumentParser = subparsers.add_parser("auth", help="auth service: signing keys, operators, tenant tiers")

    def usage(_args: argparse.Namespace) -> int:
        auth.print_help()
        return 2

    auth.set_defaults(func=usage)
    sub = auth.add_subparsers(dest="auth_command", metavar="{rotate-keys,keys,new-kek,grant-operator,set-tier}")

    rotate = sub.add_parser("rotate-keys", help="add a signing key: published now, signing after the lead time")
    rotate.add_argument("--lead-seconds", type=int, default=None,
                        help="seconds between publishing and signing (default: LOTABOTS_AUTH_KEY_PUBLISH_LEAD_S)")
    rotate.add_argument("--algorithm", choices=["EdDSA", "ES256"], default=None,
                        help="signature algorithm (default: LOTABOTS_AUTH_JWT_ALGORITHM)")
    rotate.set_defaults(func=cmd_rotate_keys)

    keys = sub.add_parser("keys", help="list signing keys and where each stands (pending/signing/retired)")
    keys.set_defaults(func=cmd_keys)

    kek = sub.add_parser("new-kek", help="print a fresh key-encryption key for LOTABOTS_AUTH_KEY_ENCRYPTION_KEY")
    kek.set_defaults(func=cmd_new_kek)

    operator = sub.add_parser("grant-operator", help="make a user a platform operator (scope platform:admin)")
    operator.add_argument("email")
    operator.add_argument("--revoke", action="store_true", help="take the operator flag away instead")
    operator.set_defaults(func=cmd_grant_operator)

    tier = sub.add_parser("set-tier", help="move a tenant to another subscription tier")
    tier.add_argument("tenant_id")
    tier.add_argument("tier")
    tier.set_defaults(func=cmd_set_tier)
    return auth


def _with_engine(action: Callable[[Settings, AsyncEngine], Awaitable[int]]) -> int:
    from lotabots.db import make_engine, migrate

    settings = get_settings()
    migrate(settings.database_url)

    async def run() -> int:
        engine = make_engine(settings.database_url)
        try:
            return await action(settings, engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _key_store(settings: Settings, engine: AsyncEngine):  # type: ignore[no-untyped-def]
    from gateway.auth.key_sealing import KeySealer, load_kek
    from gateway.auth.signing_keys import SigningKeyStore

    return SigningKeyStore(engine, KeySealer(load_kek(settings)))


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    """Add a new signing key; prune retired keys whose tokens have all expired."""
    from gateway.auth.key_rotation import rotate_keys

    async def action(settings: Settings, engine: AsyncEngine) -> int:
        result = await rotate_keys(_key_store(settings, engine), settings, datetime.now(UTC),
                                   lead_s=args.lead_seconds, algorithm=args.algorithm)
        print(json.dumps({"kid": result.kid, "algorithm": result.algorithm,
                          "activates_at": result.activates_at.isoformat(), "pruned": result.pruned}))
        return 0

    return _with_engine(action)


def cmd_keys(args: argparse.Namespace) -> int:
    """Print each signing key's kid, algorithm, activation time and state."""
    from gateway.auth.key_rotation import token_lifetime
    from gateway.auth.signing_keys import key_schedule

    async def action(settings: Settings, engine: AsyncEngine) -> int:
        keys = await _key_store(settings, engine).load()
        now = datetime.now(UTC)
        schedule = key_schedule(keys, now, token_lifetime(settings))
        published = {k.kid for k in schedule.published}
        for key in sorted(keys, key=lambda k: k.activates_at):
            if schedule.signing is not None and key.kid == schedule.signing.kid:
                state = "signing"
            elif key.activates_at > now:
                state = "pending"
            else:
                state = "retired" if key.kid in published else "expired"
            print(json.dumps({"kid": key.kid, "algorithm": key.algorithm,
                              "activates_at": key.activates_at.isoformat(), "state": state}))
        return 0

    return _with_engine(action)


def cmd_new_kek(args: argparse.Namespace) -> int:
    """Print a new random key-encryption key (base64url, 32 bytes)."""
    from gateway.auth.key_sealing import new_kek

    print(new_kek())
    return 0


def cmd_grant_operator(args: argparse.Namespace) -> int:
    """Set (or with --revoke clear) a user's platform-operator flag; applies from their next token."""
    from gateway.auth.policy import normalize_email
    from gateway.auth.user_store import UserStore

    async def action(settings: Settings, engine: AsyncEngine) -> int:
        email = normalize_email(args.email)
        if email is None or not await UserStore(engine).set_platform_operator(email, not args.revoke):
            print(f"error: no user with email {args.email!r}", file=sys.stderr)
            return 1
        print(json.dumps({"email": email, "platform_operator": not args.revoke}))
        return 0

    return _with_engine(action)


def cmd_set_tier(args: argparse.Namespace) -> int:
    """Move a tenant to another tier (gateways see it within their tier cache TTL, a few seconds)."""
    from gateway.tenants import UnknownTier, set_tenant_tier
    from lotabots.tiers import get_tier_config

    async def action(settings: Settings, engine: AsyncEngine) -> int:
        try:
            changed = await set_tenant_tier(engine, get_tier_config(), args.tenant_id, args.tier)
        except UnknownTier as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not changed:
            print(f"error: no tenant {args.tenant_id!r}", file=sys.stderr)
            return 1
        print(json.dumps({"tenant_id": args.tenant_id, "tier": args.tier}))
        return 0

    return _with_engine(action)
