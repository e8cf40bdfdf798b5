"""`lotabots up|demo|status`: run the whole platform on one machine, supervised.

`up` starts the broker if needed, syncs topics, migrates the DB, builds the model if missing, then
runs the gateway, the autoscaler (which keeps each tier's inference workers between the tier's bounds,
scaling by consumer lag), the result writer, the webhook dispatcher, the usage pipeline, the mailer and (with
no SMTP relay configured) the development SMTP server as child processes, restarting any that die. Ctrl-C (or SIGTERM) stops them in order: gateway first, then workers (which finish or
hand back their in-flight generations), then the result writer, then the broker if `up` started it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lotabots.settings import Settings, get_settings
from lotabots.tiers import get_tier_config


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self, log_dir: Path) -> None:
        from consumers.worker_pool import die_with_parent_preexec

        log = open(log_dir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lotabots.cli", *self.argv], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env}, start_new_session=True,
            preexec_fn=die_with_parent_preexec(),  # noqa: PLW1509 - a SIGKILLed `up` takes its children along
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def demo_key_file(settings: Settings) -> Path:
    return settings.data_dir / "demo-tenant.json"


def _ensure_demo_tenant(settings: Settings) -> dict[str, str]:
    """A development tenant for the README example; its key lives in a 0600 file under the data dir."""
    path = demo_key_file(settings)
    if path.exists():
        return json.loads(path.read_text())
    from gateway.tenants import create_tenant
    from lotabots.db import make_engine

    async def make() -> dict[str, str]:
        engine = make_engine(settings.database_url)
        try:
            tenant_id, key = await create_tenant(engine, get_tier_config(), "demo", "pro")
        finally:
            await engine.dispose()
        return {"tenant_id": tenant_id, "tier": "pro", "api_key": key.key}

    info = asyncio.run(make())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return info


def _children(settings: Settings) -> list[Child]:
    """Gateway, the autoscaler (which runs each tier's inference workers within its bounds, by lag),
    the result writer, the webhook dispatcher, the Faust usage stream and the usage service (which owns
    ClickHouse), the mailer, and the development SMTP server when no relay is configured (LOTABOTS_SMTP_HOST
    empty). Metrics ports: 9101 autoscaler, 9102 results, 9103 webhooks, 9104 usage stream, 9105 mailer,
    9200+ inference workers; the usage service serves its own on LOTABOTS_USAGE_PORT."""
    # last in the list: stopped after the mailer (which retries until it is up at start)
    dev_smtp = [Child("dev-smtp", ["serve", "dev-smtp"])] if settings.smtp_is_dev else []
    return [
        Child("gateway", ["serve", "gateway"]),
        Child("autoscaler", ["autoscale"], {"LOTABOTS_METRICS_PORT": "9101",
                                            "LOTABOTS_AUTOSCALE_WORKER_METRICS_PORT_BASE": "9200"}),
        Child("results", ["worker", "results"], {"LOTABOTS_METRICS_PORT": "9102"}),
        Child("webhooks", ["worker", "webhooks"], {"LOTABOTS_METRICS_PORT": "9103"}),
        Child("usage-stream", ["worker", "usage-stream"], {"LOTABOTS_METRICS_PORT": "9104"}),
        Child("usage", ["serve", "usage"]),
        Child("mailer", ["worker", "mailer"], {"LOTABOTS_METRICS_PORT": "9105"}),
    ] + dev_smtp


def cmd_up(args: argparse.Namespace) -> int:
    from lotabots.broker import BrokerError, LocalBroker
    from lotabots.db import migrate
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(exist_ok=True)

    broker = LocalBroker(settings)
    started_broker = False
    if settings.kafka_bootstrap == broker.bootstrap and broker.pid() is None:
        print(f"starting Kafka {broker.version} (first run downloads the broker jars with Maven) ...")
        try:
            broker.ensure_jars()
            broker.format_storage()
            broker.start()
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        started_broker = True
    print(f"Kafka at {settings.kafka_bootstrap}; syncing topics ...")
    asyncio.run(sync_topics(settings.kafka_bootstrap, topic_catalogue(get_tier_config())))
    print("migrating the database ...")
    migrate(settings.database_url)
    from inference.model_build import build_model

    print("checking the model (built once, then cached) ...")
    from inference.engine import serving_variants

    for variant in serving_variants(settings):
        build_model(settings.models_path, variant=variant, progress=print)
    demo = _ensure_demo_tenant(settings)

    kids = _children(settings)
    for kid in kids:
        kid.start(log_dir)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    ready = False
    deadline = time.monotonic() + 120
    while not stopping:
        if not ready:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                print(_banner(url, demo["api_key"], log_dir, settings), flush=True)
            elif time.monotonic() > deadline:
                print(f"warning: gateway not ready after 120s; see {log_dir}/gateway.log", file=sys.stderr)
                deadline = float("inf")
        for kid in kids:
            if not kid.alive() and not stopping:
                kid.restarts += 1
                print(f"{kid.name} exited ({kid.proc.returncode if kid.proc else '?'}); restarting "
                      f"(#{kid.restarts}, log {log_dir / (kid.name + '.log')})", file=sys.stderr)
                time.sleep(min(5, kid.restarts))
                kid.start(log_dir)
        time.sleep(0.5)

    print("stopping ...", flush=True)
    order = [k for k in kids if k.name == "gateway"] + [k for k in kids if k.name == "autoscaler"] + \
        [k for k in kids if k.name not in ("gateway", "autoscaler")]
    for kid in order:
        kid.stop(timeout=settings.inference_drain_timeout_s + 10)
    if started_broker:
        broker.stop()
    print("stopped.")
    return 0


def _banner(url: str, api_key: str, log_dir: Path, settings: Settings) -> str:
    mail = (f"development mailbox: {settings.dev_mail_dir} (.eml files; also GET {url}/v1/dev/mailbox)"
            if settings.smtp_is_dev else f"mail goes to the SMTP relay {settings.smtp_host}")
    return f"""
LotaBots is up at {url}   (logs: {log_dir})
{mail}

  export LOTABOTS_API_KEY={api_key}
  curl -s -X POST {url}/v1/requests -H "Authorization: Bearer $LOTABOTS_API_KEY" \\
       -H 'Content-Type: application/json' -H 'Prefer: wait=30' \\
       -d '{{"messages":[{{"role":"user","content":"What is the capital of France?"}}],"max_tokens":48}}'
  curl -s {url}/v1/requests/<id> -H "Authorization: Bearer $LOTABOTS_API_KEY"

or: lotabots demo "Write a haiku about the sea."      Ctrl-C stops everything.
"""


def cmd_demo(args: argparse.Namespace) -> int:
    from lotabots.client import LotaBotsClient

    settings = get_settings()
    path = demo_key_file(settings)
    key = os.environ.get("LOTABOTS_API_KEY") or (json.loads(path.read_text())["api_key"] if path.exists() else None)
    if not key:
        print("error: no API key: run `lotabots up` first or set LOTABOTS_API_KEY", file=sys.stderr)
        return 1
    url = args.url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    with LotaBotsClient(url, key) as client:
        req = client.submit([{"role": "user", "content": args.prompt}], max_tokens=128)
        print(f"submitted {req['id']} ({req['status']})", file=sys.stderr)
        done = client.wait(req["id"], timeout=300)
    if done["status"] != "succeeded":
        print(f"request ended {done['status']}: {done.get('error')}", file=sys.stderr)
        return 1
    print(done["output"]["text"])
    usage = done["usage"]
    print(f"[{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, "
          f"{done['timings'].get('run_ms')} ms]", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lotabots.broker import LocalBroker

    settings = get_settings()
    print(LocalBroker(settings).status().render())
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    try:
        ok = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        ok = False
    print(f"gateway {url}: {'ready' if ok else 'not reachable'}")
    from consumers.autoscaler import status_lines

    print("\n".join(status_lines(settings)))
    return 0 if ok else 1
