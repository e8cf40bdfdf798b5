"""`lotabots k8s render [--check]`: write (or verify) infra/k8s/base/generated from the tier config.

``register(subparsers)`` adds the command to the main CLI; each handler is stored as
``func`` on the parsed namespace and returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lotabots import k8s_render


def _tier_source(path: Path | None) -> tuple[Path, str]:
    if path is None:
        from lotabots.settings import get_settings

        path = Path(get_settings().tiers_file)
    return path, path.read_text()


def render_command(args: argparse.Namespace) -> int:
    """Render the per-tier manifests; with --check, only report drift (exit 1 when any)."""
    from lotabots.tiers import load_tier_config

    tiers_path, tiers_toml = _tier_source(args.tiers)
    out_dir: Path = args.out or k8s_render.default_output_dir()
    try:
        files = k8s_render.render(load_tier_config(tiers_path), tiers_toml)
    except k8s_render.RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        drift = k8s_render.check(files, out_dir)
        if drift.clean:
            print(f"{out_dir}: up to date with {tiers_path} ({len(files)} files)")
            return 0
        print(f"{out_dir} differs from the rendered output of {tiers_path}:")
        for line in drift.summary():
            print(line)
        print("run `lotabots k8s render` and commit the result")
        return 1
    changed = k8s_render.write(files, out_dir)
    for name in changed:
        print(f"wrote {out_dir / name}")
    print(f"{out_dir}: {len(files)} files, {len(changed)} changed")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `k8s render [--check] [--tiers FILE] [--out DIR]` to the main CLI's subcommands."""
    k8s = subparsers.add_parser("k8s", help="Kubernetes manifests (infra/k8s)")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", metavar="COMMAND", required=True)
    render = k8s_sub.add_parser(
        "render",
        help="render per-tier manifests from the tier config and topic catalogue",
        description="Render infra/k8s/base/generated from the tier config and schemas/topics.py.",
    )
    render.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and print a diff summary when the committed files differ",
    )
    render.add_argument("--tiers", type=Path, default=None, help="tier config (default: LOTABOTS_TIERS_FILE)")
    render.add_argument(
        "--out", type=Path, default=None, help="output folder (default: infra/k8s/base/generated)"
    )
    render.set_defaults(func=render_command)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m lotabots.cli_k8s render --check`), same as `lotabots k8s ...`."""
    parser = argparse.ArgumentParser(prog="lotabots")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["k8s", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
