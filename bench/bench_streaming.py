"""Token streaming: what the whole path adds to the engine, and how many streams one gateway carries.

Real PostgreSQL, a real Kafka broker, the real gateway, result writer and inference worker processes,
the real model (fp32 unless --variant). Every figure is printed against a baseline from the same run:

1. **TTFT overhead**: time to the first `token` event of `POST /v1/requests` with `"stream": true`
   (HTTP → gateway → Kafka → worker → `results.tokens` → gateway → SSE), one request at a time, versus
   the engine's own TTFT for the same prompts (the worker's BatchScheduler in this process, submit →
   first text delta). Overhead = path − engine for the same prompt, request by request (the two run
   back to back, with the prefix cache in the same state), at p50 and p99 over `--ttft-requests` short
   requests (8 tokens: a p99 over 200 samples is not just the largest one). The difference of the two
   sides' own percentiles is printed too.
2. **Inter-token delivery**: characters per second a client receives between its first and last
   `token` event, versus the engine's rate between its first and last delta for the same prompts
   (greedy, so the same text), at 1 stream (`--requests`) and at 16 concurrent streams (`--rounds`).

   The baseline is measured while the stack is up and idle, **interleaved** with the path: request i
   runs through the path and then through the engine alone (the order flips every request), and the
   16-stream rounds alternate. The machine's speed drifts over minutes (a shared VM: one run measured
   the engine alone 22 % slower than the worker in the stack, because it ran last); interleaving puts
   the drift on both sides. The worker's prefix cache and the baseline's see the same prompts in the
   same order.
3. **Non-streaming chat completions**: `POST /v1/chat/completions` versus `POST /v1/requests` +
   long-poll (`GET ?wait=`) for the same work, end-to-end latency p50.
4. **Fan-out**: one gateway holding `--streams` SSE streams of requests on a tier no worker serves,
   while this bench plays the worker (the simulated backend: no model cost): every "decode step" it
   publishes one chunk per stream, grouped per partition as the worker does, `--steps` steps a second.
   Prints delivered chunks/s, gateway CPU per delivered chunk (from /proc) and chunk latency
   (publish → client) p50/p99. Goal: ≥ 20,000 delivered chunks/s per gateway core.

Usage: .venv/bin/python bench/bench_streaming.py [--ttft-requests 200] [--requests 20] [--rounds 3]
       [--tokens 96] [--streams 500] [--steps 40] [--seconds 10] [--threads 1] [--variant fp32]
       [--single-row int4-fp32]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
from _common import REPO, cpu_seconds, tree_cpu_seconds, wait_http

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a Kafka consumer group shares partitions.",
    "Give me three tips for writing clear emails.",
    "Describe the water cycle for a ten-year-old.",
]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


# ---- the engine alone --------------------------------------------------------------------------
def engine_run(model, profile, indices: list[int], tokens: int, settings, cache) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    """The worker's scheduler on the same prompts at once: TTFT and streamed chars/s per sequence.

    Built as the worker builds it (the settings' batch and prefill bounds), and every run shares one prefix
    cache (``cache``), fed the same prompts in the same order as the worker's: the worker's cache reuses the
    autonomy system prompt and repeated prompts, and a baseline without it would be slower than the worker.
    """
    from inference.scheduler import BatchScheduler, SequenceParams

    marks: dict[str, list[tuple[float, int]]] = {str(i): [] for i in indices}
    submitted: dict[str, float] = {}
    done = threading.Event()
    finished: list[str] = []

    def on_tokens(deltas) -> None:  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        for d in deltas:
            marks[d.seq_id].append((now, d.position + len(d.text)))

    def on_finish(result) -> None:  # type: ignore[no-untyped-def]
        finished.append(result.seq_id)
        if len(finished) == len(indices):
            done.set()

    sched = BatchScheduler(
        model, max_batch=max(settings.inference_max_batch, len(indices)), on_tokens=on_tokens, prefix_cache=cache,
        max_tokens_in_flight=settings.inference_max_tokens_in_flight, prefill_chunk=settings.inference_prefill_chunk,
        prefill_step_ratio=settings.inference_prefill_step_ratio,
        prefill_whole_tokens=settings.inference_prefill_whole_tokens)
    sched.start()
    for i in indices:
        prompt = model.encode_chat(profile.messages(messages(i)))
        submitted[str(i)] = time.perf_counter()
        sched.submit(str(i), prompt, SequenceParams(max_tokens=tokens), on_finish)
    done.wait()
    sched.stop()
    out = []
    for i in indices:
        m = marks[str(i)]
        rate = (m[-1][1] - m[0][1]) / (m[-1][0] - m[0][0]) if len(m) > 1 and m[-1][0] > m[0][0] else float("nan")
        out.append({"ttft_ms": (m[0][0] - submitted[str(i)]) * 1000, "chars_s": rate})
    return out


# ---- through the platform ---------------------------------------------------------------------
async def stream_once(client: httpx.AsyncClient, i: int, tokens: int) -> dict[str, float]:
    body = {"messages": messages(i), "max_tokens": tokens, "stream": True}
    marks: list[tuple[float, int]] = []
    sent, sent_wall = time.perf_counter(), time.time()
    first_wall = 0.0
    final: dict = {}
    async with client.stream("POST", "/v1/requests", json=body) as response:
        assert response.status_code == 200, await response.aread()
        buffer = b""
        async for piece in response.aiter_bytes():
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.startswith(b"event: token"):
                    position = int(event.split(b"\nid: ", 1)[1].split(b"\n", 1)[0])
                    marks.append((time.perf_counter(), position))
                    first_wall = first_wall or time.time()
                elif event.startswith(b"event: done"):
                    final = json.loads(event.split(b"\ndata: ", 1)[1])
    rate = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]) if len(marks) > 1 else float("nan")
    t = final["timings"]

    def wall(key: str) -> float:
        return datetime.fromisoformat(t[key]).timestamp()

    # where the time to the first token went (same machine, one clock): to the worker, in it, back out
    return {"ttft_ms": (marks[0][0] - sent) * 1000 if marks else float("nan"), "chars_s": rate,
            "in_ms": (wall("started_at") - sent_wall) * 1000, "worker_ttft_ms": (wall("first_token_at") - wall("started_at")) * 1000,
            "out_ms": (first_wall - wall("first_token_at")) * 1000,
            "worker_chars_s": len(final["output"]["text"]) / max(wall("finished_at") - wall("first_token_at"), 1e-9)}


class Baseline:
    """The engine alone in this process: the worker's scheduler settings and one prefix cache."""

    def __init__(self, models: Path, variant: str, threads: int, single_row: str) -> None:
        from inference.autonomy_profiles import AutonomyProfiles
        from inference.engine import prepare
        from inference.model_files import load_model
        from inference.prefix_cache import PrefixCache
        from lotabots.settings import Settings

        self.settings = Settings()
        self.profile = AutonomyProfiles.load(self.settings.autonomy_profiles_path).for_level(None)
        self.model = prepare(load_model(models, variant=variant, threads=threads, single_row_variant=single_row or None))
        self.cache = PrefixCache(self.settings.inference_prefix_cache_mb << 20, block=self.settings.inference_prefix_block)

    async def run(self, indices: list[int], tokens: int) -> list[dict[str, float]]:
        return await asyncio.to_thread(engine_run, self.model, self.profile, indices, tokens, self.settings, self.cache)


async def interleaved(client: httpx.AsyncClient, baseline: Baseline, indices: list[int], tokens: int, flip: bool
                      ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """The same prompts through the path and through the engine alone, one after the other."""
    async def path() -> list[dict[str, float]]:
        return list(await asyncio.gather(*[stream_once(client, i, tokens) for i in indices]))

    if flip:
        eng = await baseline.run(indices, tokens)
        return await path(), eng
    via = await path()
    return via, await baseline.run(indices, tokens)


async def path_runs(base: str, key: str, baseline: Baseline, args: argparse.Namespace, pids: dict[str, int]
                    ) -> dict[str, object]:
    """TTFT, single and 16 concurrent streams, each against the engine alone interleaved with it, and the
    cores each stack process used during the single streams."""
    out: dict[str, object] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
        # warm-up, both sides and the same prompts (the two prefix caches stay in step): a fresh stack's
        # first minute is slow (the broker's JIT: produce and fetch waits of 50-90 ms in it)
        for i in range(args.warmup):
            await interleaved(client, baseline, [i], 8, i % 2 == 1)
        ttft = [await interleaved(client, baseline, [i], 8, i % 2 == 1) for i in range(args.ttft_requests)]
        out["ttft"] = ([p[0] for p, _ in ttft], [e[0] for _, e in ttft])
        if args.ttft_only:
            return out

        def used(pid: int) -> float:  # the client itself only: the broker and PostgreSQL are its children
            return cpu_seconds(pid) if pid == os.getpid() else tree_cpu_seconds(pid)

        single: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
        busy = {name: 0.0 for name in pids}
        path_wall = 0.0
        for i in range(args.requests):
            eng = await baseline.run([i], args.tokens) if i % 2 else []
            cpu0, t0 = {name: used(pid) for name, pid in pids.items()}, time.perf_counter()
            via = [await stream_once(client, i, args.tokens)]
            path_wall += time.perf_counter() - t0
            for name, pid in pids.items():
                busy[name] += used(pid) - cpu0[name]
            eng = eng or await baseline.run([i], args.tokens)
            single[0].extend(via)
            single[1].extend(eng)
        out["single"] = single
        out["cores"] = {name: busy[name] / path_wall for name in pids}
        out["concurrent"] = [await interleaved(client, baseline, list(range(16)), args.tokens, r % 2 == 1)
                             for r in range(args.rounds)]
    return out


async def completion_vs_long_poll(base: str, key: str, n: int, tokens: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"chat.completions": [], "POST + long-poll": []}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
        for i in range(n):
            for kind in (list(out) if i % 2 == 0 else list(reversed(out))):
                t0 = time.perf_counter()
                if kind == "chat.completions":
                    r = await client.post("/v1/chat/completions", json={
                        "model": "smollm2-135m-instruct", "messages": messages(i), "max_tokens": tokens,
                        "temperature": 0})
                    assert r.status_code == 200, r.text
                else:
                    r = await client.post("/v1/requests", json={"messages": messages(i), "max_tokens": tokens})
                    rid = r.json()["id"]
                    while (await client.get(f"/v1/requests/{rid}", params={"wait": 30})).json()["status"] != "succeeded":
                        pass
                out[kind].append((time.perf_counter() - t0) * 1000)
    return out


# ---- fan-out -----------------------------------------------------------------------------------
async def fan_out(base: str, keys: list[str], bootstrap: str, gateway_pid: int, streams: int, steps: int,
                  seconds: float, profile: str | None = None) -> dict[str, float]:
    import orjson
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    from schemas.topics import TOKEN_STREAM

    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    latencies: list[float] = []
    delivered = 0
    opened = 0
    all_open = asyncio.Event()
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        auth = [{"Authorization": f"Bearer {keys[i % len(keys)]}"} for i in range(streams)]
        answers = [(await client.post("/v1/requests", json=body, headers=auth[i])).json() for i in range(streams)]
        assert all("id" in a for a in answers), next(a for a in answers if "id" not in a)
        ids = [a["id"] for a in answers]

        async def reader(rid: str, headers: dict[str, str]) -> None:
            nonlocal delivered, opened
            async with client.stream("GET", f"/v1/requests/{rid}/stream", headers=headers) as response:
                opened += 1
                if opened == streams:
                    all_open.set()
                buffer = b""
                async for piece in response.aiter_bytes():
                    now = time.time()
                    buffer += piece
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        at = event.find(b'"delta":"')
                        if at >= 0:
                            delivered += 1
                            latencies.append(now - float(event[at + 9:at + 26]))
                    if stop.is_set():
                        return

        readers = [asyncio.create_task(reader(rid, auth[i])) for i, rid in enumerate(ids)]
        await asyncio.wait_for(all_open.wait(), 120)
        await asyncio.sleep(1.0)  # every stream parked on its text
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
        await producer.start()
        partitions = len(await producer.partitions_for(TOKEN_STREAM))
        by_partition: dict[int, list[str]] = {}
        for rid in ids:
            by_partition.setdefault((murmur2(rid.encode()) & 0x7FFFFFFF) % partitions, []).append(rid)
        total_steps = int(seconds * steps)
        spy = None
        if profile:  # py-spy (pip install py-spy) samples the gateway while it fans out
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile, "-f", "speedscope",  # noqa: ASYNC220 - once, before the timed part
                                    "-d", str(int(seconds)), "-p", str(gateway_pid), "-r", "200"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0, t0 = tree_cpu_seconds(gateway_pid), time.perf_counter()
        delivered_before = delivered
        for step in range(total_steps):
            stamp = f"{time.time():017.6f}|"  # 18 characters: positions tile
            for partition, rids in by_partition.items():
                chunks = [{"request_id": rid, "attempt": "run_bench", "seq": step + 1, "position": step * 18,
                           "delta": stamp, "tokens": 1} for rid in rids]
                await producer.send(TOKEN_STREAM, orjson.dumps({"schema_version": 1, "worker": "bench",
                                                                "chunks": chunks}),
                                    key=rids[0].encode(), partition=partition)
            await asyncio.sleep(max(0.0, t0 + (step + 1) / steps - time.perf_counter()))
        await producer.flush()
        expected = total_steps * streams
        deadline = time.monotonic() + 30
        while delivered - delivered_before < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        wall, cpu = time.perf_counter() - t0, tree_cpu_seconds(gateway_pid) - cpu0
        got = delivered - delivered_before
        stop.set()
        await producer.stop()
        if spy is not None:
            spy.wait(60)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return {"expected": expected, "delivered": got, "chunks_s": got / wall, "cpu_s": cpu,
            "cpu_us_per_chunk": cpu / max(got, 1) * 1e6, "p50_ms": pct(latencies, 0.5) * 1000,
            "p99_ms": pct(latencies, 0.99) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttft-requests", type=int, default=200, help="short requests for the TTFT percentiles")
    ap.add_argument("--requests", type=int, default=20, help="single streams of --tokens for the inter-token rate")
    ap.add_argument("--rounds", type=int, default=3, help="16-stream rounds, each against the engine alone")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--steps", type=float, default=40, help="decode steps per second in the fan-out phase")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=1,
                    help="the worker's ONNX Runtime threads (1 on a 2-core machine leaves a core to the stack)")
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--single-row", default="int4-fp32",
                    help="the worker's (and the baseline's) one-row steps on this variant; '' = off")
    ap.add_argument("--profile", help="write a py-spy profile (speedscope JSON) of the gateway's fan-out here")
    ap.add_argument("--fan-out-only", action="store_true", help="skip the model phases")
    ap.add_argument("--warmup", type=int, default=100,
                    help="short requests on both sides before anything is measured (a fresh stack warms up)")
    ap.add_argument("--json", help="write every request's timings here")
    ap.add_argument("--ttft-only", action="store_true", help="only the TTFT phase (no streams, calls or fan-out)")
    args = ap.parse_args()

    from gateway.tenants import create_tenant
    from inference.model_build import build_model
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import free_ports, kafka_service, postgres_service

    models = REPO / ".data" / "models"
    for variant in filter(None, (args.variant, args.single_row)):
        build_model(models, variant=variant)
    tmp = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    tiers = load_tier_config(REPO / "lotabots" / "tiers.toml")
    with postgres_service(tmp / "pg") as pg, kafka_service(tmp / "kafka") as kafka:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(tiers)))
        migrate(pg.url)

        async def tenant(tier: str):  # type: ignore[no-untyped-def]
            engine = make_engine(pg.url)
            _, key = await create_tenant(engine, tiers, "bench", tier)
            await engine.dispose()
            return key

        pro_key = asyncio.run(tenant("pro")).key
        # fan-out tenants: a tier caps one tenant's requests in flight (enterprise: 256)
        fan_keys = [asyncio.run(tenant("enterprise")).key for _ in range(-(-args.streams // 200))]
        port = free_ports(1)[0]
        env = {**os.environ, "LOTABOTS_DATABASE_URL": pg.url, "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
               "LOTABOTS_DATA_DIR": str(tmp / "data"), "LOTABOTS_LOG_LEVEL": "WARNING",
               "LOTABOTS_MODEL_DIR": str(models), "LOTABOTS_MODEL_VARIANT": args.variant,
               "LOTABOTS_MODEL_SINGLE_ROW_VARIANT": args.single_row,
               "LOTABOTS_INFERENCE_THREADS": str(args.threads), "LOTABOTS_USAGE_PORT": str(free_ports(1)[0])}
        cli = [sys.executable, "-m", "lotabots.cli"]
        gateway = subprocess.Popen([*cli, "serve", "gateway", "--port", str(port)], cwd=REPO, env=env)
        writer = subprocess.Popen([*cli, "worker", "results"], cwd=REPO, env=env)
        worker_metrics = free_ports(1)[0]
        worker = subprocess.Popen([*cli, "worker", "inference", "--tier", "pro"], cwd=REPO,
                                  env={**env, "LOTABOTS_METRICS_PORT": str(worker_metrics)})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/readyz", 120)
            if not args.fan_out_only:
                pids = {"worker": worker.pid, "kafka": kafka.pid, "gateway": gateway.pid, "result writer": writer.pid,
                        "postgresql": pg.pid, "this client": os.getpid()}
                baseline = Baseline(models, args.variant, args.threads, args.single_row)
                runs = asyncio.run(path_runs(base, pro_key, baseline, args, {k: v for k, v in pids.items() if v}))
                calls = {} if args.ttft_only else asyncio.run(completion_vs_long_poll(base, pro_key, max(10, args.requests // 2), 16))
                metrics = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics", timeout=10).text
                print("worker prefix cache:", " ".join(
                    line.split("{")[0].removeprefix("lotabots_prefix_cache_") + "=" + line.rsplit(" ", 1)[1]
                    for line in metrics.splitlines() if line.startswith("lotabots_prefix_cache_")))
            fan = {} if args.ttft_only else asyncio.run(fan_out(base, fan_keys, kafka.bootstrap, gateway.pid, args.streams, int(args.steps),
                                      args.seconds, args.profile))
        finally:
            for process in (worker, writer, gateway):
                process.terminate()
                process.wait(30)
    fan_line = "" if args.ttft_only else (f"fan-out: {args.streams} streams, {args.steps:.0f} steps/s: delivered {fan['delivered']:.0f}/"
                f"{fan['expected']:.0f} chunks, {fan['chunks_s']:,.0f} chunks/s, gateway CPU {fan['cpu_s']:.2f} s = "
                f"{fan['cpu_us_per_chunk']:.1f} us/chunk = {1e6 / fan['cpu_us_per_chunk']:,.0f} chunks/s per core "
                f"(goal >= 20,000); chunk latency p50 {fan['p50_ms']:.1f} ms p99 {fan['p99_ms']:.1f} ms")
    if args.fan_out_only:
        print(fan_line)
        return
    print("engine-alone prefix cache: " + " ".join(f"{k}={v}" for k, v in dataclasses.asdict(baseline.cache.stats).items()))

    def p(rows: list[dict[str, float]], key: str, q: float) -> float:
        return pct([r[key] for r in rows], q)

    via, eng = runs["ttft"]
    if args.json:
        Path(args.json).write_text(json.dumps(runs))
    print(f"TTFT, one request at a time, interleaved (n={args.ttft_requests}, {args.variant}{'+' + args.single_row if args.single_row else ''}, {args.threads} threads):")
    print(f"  engine            p50 {p(eng, 'ttft_ms', .5):7.1f} ms  p99 {p(eng, 'ttft_ms', .99):7.1f} ms")
    print(f"  through the path  p50 {p(via, 'ttft_ms', .5):7.1f} ms  p99 {p(via, 'ttft_ms', .99):7.1f} ms")
    for q in (.5, .99):
        print(f"  breakdown p{q * 100:.0f}: submit -> worker start {p(via, 'in_ms', q):.1f} ms, worker TTFT "
              f"{p(via, 'worker_ttft_ms', q):.1f} ms, worker first token -> client {p(via, 'out_ms', q):.1f} ms")
    paired = [a["ttft_ms"] - b["ttft_ms"] for a, b in zip(via, eng, strict=True)]
    print(f"  overhead, same prompt (path - engine per request)  p50 {pct(paired, .5):7.1f} ms  "
          f"p99 {pct(paired, .99):7.1f} ms  (goal <= 15 / 40 ms)")
    print(f"  overhead, path p - engine p                        p50 {p(via, 'ttft_ms', .5) - p(eng, 'ttft_ms', .5):7.1f} ms  "
          f"p99 {p(via, 'ttft_ms', .99) - p(eng, 'ttft_ms', .99):7.1f} ms")
    if args.ttft_only:
        return

    def rates(path: list[dict[str, float]], eng: list[dict[str, float]]) -> tuple[float, float, float]:
        return (statistics.mean(r["chars_s"] for r in path), statistics.mean(r["chars_s"] for r in eng),
                statistics.mean(r["worker_chars_s"] for r in path))

    a, b, w = rates(*runs["single"])
    print(f"inter-token, 1 stream (n={args.requests}): client {a:7.1f} chars/s  engine alone {b:7.1f} chars/s  "
          f"ratio {a / b:5.3f}  (goal within 5%); the worker in the stack {w:7.1f} chars/s (client/worker {a / w:5.3f})")
    ratios = []
    for r, (path, eng) in enumerate(runs["concurrent"]):
        a, b, w = rates(path, eng)
        ratios.append(a / b)
        print(f"inter-token, 16 streams, round {r + 1}: client {a:7.1f} chars/s  engine alone {b:7.1f} chars/s  "
              f"ratio {a / b:5.3f}; the worker in the stack {w:7.1f} chars/s (client/worker {a / w:5.3f})")
    print(f"inter-token, 16 streams: median ratio over {len(ratios)} rounds {statistics.median(ratios):5.3f}  "
          "(goal within 5%)")
    print("cores used during the 1-stream runs: " + ", ".join(f"{k} {v:.2f}" for k, v in runs["cores"].items())
          + f" (the engine alone: {args.threads} threads; bench/bench_neighbour.py measures what a neighbour costs it)")
    cc, lp = statistics.median(calls["chat.completions"]), statistics.median(calls["POST + long-poll"])
    print(f"non-streaming: chat.completions p50 {cc:7.1f} ms  POST + long-poll p50 {lp:7.1f} ms  "
          f"ratio {cc / lp:5.3f}x  (goal <= 1.1x)")
    print(fan_line)


if __name__ == "__main__":
    main()
