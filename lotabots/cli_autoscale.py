"""`lotabots autoscale`: the local autoscaler (run it, or print what it is doing)."""

from __future__ import annotations

import argparse
import json

from lotabots.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    auto = sub.add_parser(
        "autoscale",
        help="start/stop inference workers per tier from consumer-group lag (KEDA semantics, local mode)",
        description="Runs until SIGTERM/Ctrl-C, then stops its workers gracefully (they drain first). "
                    "`lotabots autoscale status` prints its last status.",
    )
    auto.add_argument("--tier", action="append", dest="tiers", metavar="TIER",
                      help="autoscale only this tier (repeatable; default: every tier of the config)")
    auto.set_defaults(func=_run)
    auto_sub = auto.add_subparsers(dest="autoscale_command", metavar="SUBCOMMAND")
    status = auto_sub.add_parser("status", help="lag, desired and actual workers per tier, from the status file")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.set_defaults(func=_status)


def _run(args: argparse.Namespace) -> int:
    from consumers.autoscaler import run_autoscaler
    from lotabots.tiers import get_tier_config

    tiers = get_tier_config()
    unknown = [t for t in args.tiers or [] if t not in tiers.tiers]
    if unknown:
        print(f"error: unknown tier(s) {unknown}; the tier config has {tiers.names}")
        return 2
    run_autoscaler(get_settings(), tiers, args.tiers)
    return 0


def _status(args: argparse.Namespace) -> int:
    from consumers.autoscaler import read_status, status_lines

    settings = get_settings()
    if args.json:
        status = read_status(settings)
        print(json.dumps(status, indent=2))
        return 0 if status is not None and status["alive"] else 1
    for line in status_lines(settings):
        print(line)
    status = read_status(settings)
    return 0 if status is not None and status["alive"] else 1
