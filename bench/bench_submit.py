"""Submit path: requests/s and p50/p99 of `POST /v1/requests` versus a bare FastAPI endpoint, same run.

Real PostgreSQL and a real Kafka broker are started as processes; both apps run under uvicorn with
one process on loopback; wrk drives each with the same body and connection count.
Usage: python bench/bench_submit.py [--seconds 10] [--connections 32]
       python bench/bench_submit.py --compare-cluster [--rounds 2]   # the submit path on 1 vs 3 brokers
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, ensure_wrk, run_wrk, tree_cpu_seconds, wait_http

BODY = '{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}'

# The bench measures submits that pass every check (rate, concurrency, token quota; gateway/limits/): its
# tenant is on a tier, like enterprise, whose limits the run never reaches.
BENCH_TIER = """
[tiers.bench]
request_partitions = 8
workers_min = 0
workers_max = 8
max_tokens_cap = 4096
[tiers.bench.scaling]
lag_threshold = 2
[tiers.bench.rate_limits]
requests_per_minute = 1_000_000_000
concurrent_requests = 1_000_000_000
[tiers.bench.quotas]
tokens_per_day = 1_000_000_000_000
tokens_per_month = 1_000_000_000_000
[tiers.bench.prices]
[tiers.bench.k8s]
cpu = "1"
memory = "1Gi"
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--compare-cluster", action="store_true",
                    help="POST /v1/requests on one broker and on a local 3-broker cluster (RF 3, min.insync.replicas "
                         "2, acks=all), interleaved 1, 3, 1, 3: the price of replication")
    ap.add_argument("--rounds", type=int, default=2, help="with --compare-cluster: rounds of (1, 3)")
    args = ap.parse_args()
    ensure_wrk()  # fail (or install it) before any service starts
    if args.compare_cluster:
        compare_cluster(args)
        return

    from gateway.tenants import create_tenant
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import free_ports, kafka_service, postgres_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    tiers_file = tmp / "tiers.toml"
    tiers_file.write_text((REPO / "lotabots" / "tiers.toml").read_text() + BENCH_TIER)
    tiers = load_tier_config(tiers_file)
    with postgres_service(tmp / "pg") as pg, kafka_service(tmp / "kafka") as kafka:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(tiers)))
        migrate(pg.url)

        async def tenant() -> str:
            engine = make_engine(pg.url)
            _, key = await create_tenant(engine, tiers, "bench", "bench")
            await engine.dispose()
            return key.key

        api_key = asyncio.run(tenant())
        lua = tmp / "post.lua"
        lua.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = '{BODY}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {api_key}"\n'
        )
        gw_port, bare_port = free_ports(2)
        env = {**os.environ, "LOTABOTS_DATABASE_URL": pg.url, "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
               "LOTABOTS_DATA_DIR": str(tmp / "data"), "LOTABOTS_LOG_LEVEL": "WARNING",
               "LOTABOTS_TIERS_FILE": str(tiers_file)}
        uvicorn_args = ["--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"]
        bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(bare_port),
                                 *uvicorn_args], cwd=REPO / "bench", env=env)
        gateway = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "serve", "gateway", "--port",
                                    str(gw_port)], cwd=REPO, env=env)
        try:
            wait_http(f"http://127.0.0.1:{bare_port}/healthz")
            wait_http(f"http://127.0.0.1:{gw_port}/readyz")
            if os.environ.get("BENCH_PROFILE"):
                subprocess.Popen(["py-spy", "record", "-d", "6", "-o", os.environ["BENCH_PROFILE"], "-f", "raw",
                                  "-p", str(gateway.pid)])
            results = {}
            order = (("submit", gw_port), ("bare", bare_port)) if os.environ.get("BENCH_PROFILE") else \
                (("bare", bare_port), ("submit", gw_port))
            pids = {"bare": [bare.pid], "submit": [gateway.pid, pg.pid, kafka.pid]}
            for name, port in order:
                run_wrk(f"http://127.0.0.1:{port}/v1/requests", lua, connections=args.connections, seconds=2)
                before = [tree_cpu_seconds(p) for p in pids[name]]
                results[name] = run_wrk(f"http://127.0.0.1:{port}/v1/requests", lua,
                                        connections=args.connections, seconds=args.seconds)
                spent = [tree_cpu_seconds(p) - b for p, b in zip(pids[name], before, strict=True)]
                done = results[name]["rps"] * args.seconds
                results[name]["cpu_us"] = [s / done * 1e6 for s in spent]
            facts_per_message = _facts_per_message(f"http://127.0.0.1:{gw_port}/metrics")
        finally:
            for p in (bare, gateway):
                p.terminate()
                p.wait(30)
    b, s = results["bare"], results["submit"]
    print(f"bare FastAPI endpoint : {b['rps']:8.0f} req/s  p50 {b['p50_ms']:6.2f} ms  p99 {b['p99_ms']:6.2f} ms")
    print(f"POST /v1/requests     : {s['rps']:8.0f} req/s  p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms"
          f"  (non-2xx: {s['non2xx']:.0f})")
    print(f"ratio submit/bare     : {s['rps'] / b['rps']:.2f}x requests/s  (goal >= 0.40, product goal >= 0.50)")
    gw, pgc, kc = s["cpu_us"]
    print(f"usage facts           : {facts_per_message:.1f} per usage.events message (the emitter's group commit)")
    print(f"CPU per request       : bare app {b['cpu_us'][0]:.0f} us; gateway {gw:.0f} us + PostgreSQL {pgc:.0f} us"
          f" + Kafka broker {kc:.0f} us (ratio of app CPU {b['cpu_us'][0] / gw:.2f})")


def compare_cluster(args: argparse.Namespace) -> None:
    """The same gateway, PostgreSQL and tenant; a fresh single broker or 3-node cluster per round, alternately."""
    import statistics

    from gateway.tenants import create_tenant
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import catalogue_for, sync_topics
    from tests.kafka_cluster import start_kafka_cluster
    from tests.services import free_ports, postgres_service, start_kafka

    tmp = Path(tempfile.mkdtemp(prefix="bench-submit-cluster-"))
    tiers_file = tmp / "tiers.toml"
    tiers_file.write_text((REPO / "lotabots" / "tiers.toml").read_text() + BENCH_TIER)
    tiers = load_tier_config(tiers_file)
    results: dict[int, list[dict[str, float]]] = {1: [], 3: []}
    with postgres_service(tmp / "pg") as pg:
        migrate(pg.url)

        async def tenant() -> str:
            engine = make_engine(pg.url)
            _, key = await create_tenant(engine, tiers, "bench", "bench")
            await engine.dispose()
            return key.key

        api_key = asyncio.run(tenant())
        lua = tmp / "post.lua"
        lua.write_text('wrk.method = "POST"\n' f"wrk.body = '{BODY}'\n"
                       'wrk.headers["Content-Type"] = "application/json"\n'
                       f'wrk.headers["Authorization"] = "Bearer {api_key}"\n')
        for r, brokers in enumerate([1, 3] * args.rounds):
            kdir = tmp / f"kafka-{r}"
            kafka = start_kafka(kdir) if brokers == 1 else start_kafka_cluster(kdir, brokers)
            gateway = None
            try:
                asyncio.run(_sync(kafka.bootstrap, tiers, catalogue_for, sync_topics))
                (gw_port,) = free_ports(1)
                env = {**os.environ, "LOTABOTS_DATABASE_URL": pg.url, "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
                       "LOTABOTS_DATA_DIR": str(tmp / "data"), "LOTABOTS_LOG_LEVEL": "WARNING",  # one sealing key
                       "LOTABOTS_TIERS_FILE": str(tiers_file)}
                gateway = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "serve", "gateway", "--port",
                                            str(gw_port)], cwd=REPO, env=env)
                wait_http(f"http://127.0.0.1:{gw_port}/readyz")
                url = f"http://127.0.0.1:{gw_port}/v1/requests"
                run_wrk(url, lua, connections=args.connections, seconds=2)  # warm-up
                res = run_wrk(url, lua, connections=args.connections, seconds=args.seconds)
            finally:
                if gateway is not None:
                    gateway.terminate()
                    gateway.wait(30)
                kafka.stop()
            results[brokers].append(res)
            print(f"round {r + 1} ({brokers} broker{'s' if brokers > 1 else ''}): {res['rps']:8.0f} req/s  "
                  f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  (non-2xx: {res['non2xx']:.0f}); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    med = {b: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50_ms", "p99_ms")} for b, v in results.items()}
    print(f"median of {args.rounds}: 1 broker {med[1]['rps']:.0f} req/s (p50 {med[1]['p50_ms']:.2f} ms, p99 "
          f"{med[1]['p99_ms']:.2f} ms); 3 brokers {med[3]['rps']:.0f} req/s (p50 {med[3]['p50_ms']:.2f} ms, p99 "
          f"{med[3]['p99_ms']:.2f} ms)")
    print(f"ratio 3 brokers / 1 broker: {med[3]['rps'] / med[1]['rps']:.2f}x requests/s, "
          f"p50 {med[3]['p50_ms'] / med[1]['p50_ms']:.2f}x, p99 {med[3]['p99_ms'] / med[1]['p99_ms']:.2f}x")


async def _sync(bootstrap, tiers, catalogue_for, sync_topics) -> None:  # type: ignore[no-untyped-def]
    await sync_topics(bootstrap, await catalogue_for(bootstrap, tiers))


def _facts_per_message(metrics_url: str) -> float:
    import httpx

    totals = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(f"lotabots_usage_facts_per_message{suffix} "):
                totals[suffix] = float(line.split()[-1])
    return totals.get("_sum", 0.0) / max(totals.get("_count", 0.0), 1.0)


if __name__ == "__main__":
    main()
