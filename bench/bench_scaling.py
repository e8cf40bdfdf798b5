"""Scaling by consumer-group size: throughput at 1, 2 and 4 workers, and how fast the autoscaler drains a burst.

Uses the TEST BACKEND (``LOTABOTS_INFERENCE_BACKEND=simulated``: each decode step sleeps
``ms_per_token × rows``, so one worker is bounded at ``1000 / ms_per_token`` tokens/s and uses no CPU):
what is measured is the platform's scaling (Kafka partitions, consumer-group rebalancing, worker
processes, the autoscaler), not the model. Real Kafka broker, real worker processes.

1. Throughput: N ∈ {1, 2, 4} workers join group ``inference.scale`` (4 partitions); once the group is
   stable, ``--requests`` requests of ``--tokens`` tokens each are produced round-robin over the
   partitions, and the clock stops at the last terminal event on ``results``.
2. Burst: the autoscaler (``lotabots autoscale``, KEDA defaults: scale-up +4 per 15 s, no window) starts
   the tier at its minimum of 1 worker; the same burst is produced at once. Reported: time until every
   request is done, against the theoretical minimum (all the work spread over 4 workers from t=0) and
   against one worker.

Usage: python bench/bench_scaling.py [--requests 96] [--tokens 32] [--ms-per-token 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO

TIER = "scale"
PARTITIONS = 4
TIER_TOML = f"""
[tiers.{TIER}]
request_partitions = {PARTITIONS}
workers_min = 1
workers_max = 4
max_tokens_cap = 4096
[tiers.{TIER}.scaling]
lag_threshold = 4
activation_lag_threshold = 0
[tiers.{TIER}.rate_limits]
requests_per_minute = 60000
concurrent_requests = 1024
[tiers.{TIER}.quotas]
tokens_per_day = 1_000_000_000
tokens_per_month = 1_000_000_000
[tiers.{TIER}.prices]
[tiers.{TIER}.k8s]
cpu = "4"
memory = "8Gi"
"""


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lotabots.cli", *argv], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]], timeout: float = 90) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def _group_members(bootstrap: str, group: str) -> tuple[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await _describe(admin, group)
    finally:
        await admin.close()


async def _describe(admin, group: str) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    try:
        (resp,) = await admin.describe_consumer_groups([group])
        g = resp.to_object()["groups"][0]
        return g["state"], len(g["members"])
    except Exception:
        return "unknown", 0


async def _wait_stable(bootstrap: str, group: str, members: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, n = await _group_members(bootstrap, group)
        if state == "Stable" and n == members:
            await asyncio.sleep(1.0)  # let every member fetch its first batch of (empty) partitions
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"group {group} never became stable with {members} members")


class ResultWatch:
    """Reads `results` from its current end and records when each watched request ended."""

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer("results", bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="latest", enable_auto_commit=False)
        self.done: dict[str, float] = {}
        self.duplicates = 0

    async def start(self) -> None:
        await self.consumer.start()
        while not self.consumer.assignment():
            await asyncio.sleep(0.05)
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)  # resolve "latest" now, before anything is produced

    async def until(self, ids: set[str], timeout: float, on_tick=None) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not ids <= self.done.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids - self.done.keys())} requests unfinished after {timeout:.0f}s")
            batch = await self.consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    event = json.loads(r.value)
                    if event["request_id"] in ids and event["type"] in ("succeeded", "failed", "canceled"):
                        if event["type"] != "succeeded":
                            raise RuntimeError(f"request {event['request_id']} ended {event['type']}: {event}")
                        if event["request_id"] in self.done:
                            self.duplicates += 1
                        self.done.setdefault(event["request_id"], now)
            if on_tick:
                await on_tick()

    async def stop(self) -> None:
        await self.consumer.stop()


async def _produce_burst(bootstrap: str, run: str, n: int, tokens: int) -> tuple[set[str], float]:
    from aiokafka import AIOKafkaProducer

    from schemas.events import ChatMessage, GenerationParams, InferenceRequest

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    ids: set[str] = set()
    try:
        t0 = time.monotonic()
        futures = []
        for i in range(n):
            req = InferenceRequest(
                request_id=f"req_{run}_{i}", tenant_id="ten_bench", tier=TIER,
                messages=[ChatMessage(role="user", content=f"bench request {i}")],
                params=GenerationParams(max_tokens=tokens), submitted_at=datetime.now(UTC),
            )
            ids.add(req.request_id)
            # round-robin over partitions: equal work per partition, so N workers get equal shares
            futures.append(await producer.send(f"requests.{TIER}", req.model_dump_json().encode(),
                                               key=req.request_id.encode(), partition=i % PARTITIONS))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ids, t0


async def throughput(bootstrap: str, env: dict[str, str], logs: Path, workers: int, n: int, tokens: int) -> float:
    procs = [_spawn(["worker", "inference", "--tier", TIER], env, logs / f"w{workers}-{i}.log")
             for i in range(workers)]
    try:
        await _wait_stable(bootstrap, f"inference.{TIER}", workers)
        watch = ResultWatch(bootstrap)
        await watch.start()
        try:
            ids, t0 = await _produce_burst(bootstrap, f"w{workers}", n, tokens)
            await watch.until(ids, timeout=600)
            wall = max(watch.done[i] for i in ids) - t0
            assert watch.duplicates == 0, f"{watch.duplicates} requests completed twice"
        finally:
            await watch.stop()
    finally:
        _stop(procs)
    return wall


async def burst(bootstrap: str, env: dict[str, str], logs: Path, n: int, tokens: int) -> dict[str, float]:
    status_file = Path(env["LOTABOTS_DATA_DIR"]) / "autoscaler" / "status.json"
    auto = _spawn(["autoscale", "--tier", TIER], {**env, "LOTABOTS_AUTOSCALE_POLL_INTERVAL_S": "1"},
                  logs / "autoscaler.log")
    from aiokafka.admin import AIOKafkaAdminClient

    peak: dict[str, float] = {"workers": 0}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await _wait_stable(bootstrap, f"inference.{TIER}", 1)
        watch = ResultWatch(bootstrap)
        await watch.start()
        try:
            ids, t0 = await _produce_burst(bootstrap, "burst", n, tokens)
            last_probe = [0.0]

            async def sample() -> None:
                try:
                    workers = json.loads(status_file.read_text())["tiers"][TIER]["workers"]
                except (OSError, ValueError, KeyError):
                    return
                if workers > peak["workers"]:
                    peak["workers"] = workers
                    if workers == 4:
                        peak["at_max"] = time.monotonic() - t0
                if workers == 4 and "stable_at_max" not in peak and time.monotonic() - last_probe[0] > 0.5:
                    last_probe[0] = time.monotonic()
                    if await _describe(admin, f"inference.{TIER}") == ("Stable", 4):
                        peak["stable_at_max"] = time.monotonic() - t0

            await watch.until(ids, timeout=600, on_tick=sample)
            wall = max(watch.done[i] for i in ids) - t0
            assert watch.duplicates == 0, f"{watch.duplicates} requests completed twice"
        finally:
            await watch.stop()
    finally:
        await admin.close()
        _stop([auto])
    nan = float("nan")
    return {"wall": wall, "peak_workers": peak["workers"], "four_workers_after": peak.get("at_max", nan),
            "four_consuming_after": peak.get("stable_at_max", nan)}


async def main_async(args: argparse.Namespace) -> None:
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import kafka_service

    tmp = Path(tempfile.mkdtemp(prefix="lotabots-bench-scaling-"))
    tiers_file = tmp / "tiers.toml"
    tiers_file.write_text((REPO / "lotabots" / "tiers.toml").read_text() + TIER_TOML)
    logs = tmp / "logs"
    logs.mkdir()
    with kafka_service(tmp / "kafka") as kafka:
        await sync_topics(kafka.bootstrap, topic_catalogue(load_tier_config(tiers_file)))
        env = {
            **os.environ, "LOTABOTS_DATA_DIR": str(tmp / "data"), "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "LOTABOTS_TIERS_FILE": str(tiers_file), "LOTABOTS_INFERENCE_BACKEND": "simulated",
            "LOTABOTS_SIMULATED_MS_PER_TOKEN": str(args.ms_per_token), "LOTABOTS_METRICS_PORT": "0",
            "LOTABOTS_KAFKA_SESSION_TIMEOUT_MS": "6000", "LOTABOTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "LOTABOTS_LOG_LEVEL": "WARNING",
        }
        n, t, ms = args.requests, args.tokens, args.ms_per_token
        work_s = n * t * ms / 1000  # token-times of the whole burst (a prefill step costs one, like a decode)
        print(f"simulated backend: {ms} ms/token/row; {n} requests x {t} tokens; {PARTITIONS} partitions")
        print(f"one worker's ceiling: {1000 / ms:.0f} tokens/s; the burst is {work_s:.1f} worker-seconds of work")
        walls: dict[int, float] = {}
        for workers in (1, 2, 4):
            walls[workers] = await throughput(kafka.bootstrap, env, logs, workers, n, t)
            rate = n * t / walls[workers]
            print(f"  {workers} worker(s): {walls[workers]:6.2f} s  {rate:7.1f} tokens/s  "
                  f"{walls[1] / walls[workers]:.2f}x one worker  (ideal {workers}x)", flush=True)
        b = await burst(kafka.bootstrap, env, logs, n, t)
        ideal = work_s / 4
        print(f"burst with the autoscaler from 1 worker (max 4): drained in {b['wall']:.2f} s; "
              f"{b['peak_workers']:.0f} workers started {b['four_workers_after']:.1f} s after the burst, "
              f"group of 4 stable at {b['four_consuming_after']:.1f} s")
        print(f"  theoretical minimum (4 workers from t=0): {ideal:.2f} s -> {b['wall'] / ideal:.2f}x the minimum; "
              f"one worker took {walls[1]:.2f} s -> {walls[1] / b['wall']:.2f}x faster than one worker")
    shutil.rmtree(tmp / "kafka", ignore_errors=True)  # broker state; the logs stay for reading
    print(f"(logs: {logs})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--ms-per-token", type=float, default=10.0)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
