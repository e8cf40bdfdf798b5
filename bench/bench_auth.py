"""Auth benchmarks (real PostgreSQL; figures and ratios, never assertions).

1. Verifications/s in the gateway's auth dependency (`gateway.security.authenticate` with the gateway's
   verifier chain) for access tokens (EdDSA and ES256) and API keys, against a baseline in the same run:
   a bare `jwt.decode` of the same token (for tokens) and a bare SHA-256 + dict lookup (for keys).
2. p50/p99 of a cheap endpoint (`GET /healthz`) of the auth service under uvicorn, idle versus during a
   burst of logins (bcrypt at the production cost), with hashing on the thread pool (the design) and,
   as a control, with hashing forced onto the event loop.

Usage: python bench/bench_auth.py [--verifications 20000] [--probe-seconds 8] [--burst 16] [--rounds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from _common import REPO, wait_http

PASSWORD = "bench password 123"


class DiscardEvents:
    async def publish(self, event: Any) -> None:
        return None


def _settings(url: str, data_dir: Path, **extra: Any):  # type: ignore[no-untyped-def]
    from lotabots.settings import Settings

    return Settings(database_url=url, data_dir=data_dir, auth_require_email_verification=False,
                    auth_lockout_address_threshold=10**9, auth_lockout_threshold=10**9, **extra)


# ---- 1. verifications/s -------------------------------------------------------------------------


def _request(app_state: SimpleNamespace, credential: str):  # type: ignore[no-untyped-def]
    from starlette.requests import Request

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"authorization", f"Bearer {credential}".encode())],
             "app": SimpleNamespace(state=app_state), "state": {}}
    return Request(scope)


async def _rate(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(min(500, n)):  # warm caches (JWKS, revocations, tiers, key cache)
        await fn()
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return n / (time.perf_counter() - start)


async def verification_rates(url: str, data_dir: Path, n: int) -> dict[str, float]:


    results: dict[str, float] = {}
    for algorithm in ("EdDSA", "ES256"):
        results.update(await _rates_for(url, data_dir, n, algorithm))
    return results


async def _rates_for(url: str, data_dir: Path, n: int, algorithm: str) -> dict[str, float]:
    import jwt

    from gateway.api_keys import ApiKeyVerifier, create_api_key, hash_key
    from gateway.auth.gateway_wiring import gateway_token_verifier
    from gateway.auth.key_rotation import rotate_keys
    from gateway.auth.key_sealing import KeySealer, load_kek
    from gateway.auth.services import build_auth_services
    from gateway.auth.signing_keys import SigningKeyStore
    from gateway.security import authenticate
    from lotabots.db import make_engine

    results: dict[str, float] = {}
    settings = _settings(url, data_dir, auth_jwt_algorithm=algorithm, auth_bcrypt_rounds=4)
    engine = make_engine(url)
    store = SigningKeyStore(engine, KeySealer(load_kek(settings)))
    await rotate_keys(store, settings, datetime.now(UTC), lead_s=0, algorithm=algorithm)  # signs at once
    services = await build_auth_services(settings, engine, DiscardEvents())
    email = f"bench-{algorithm.lower()}-{time.time_ns()}@example.com"
    await services.registration.register(email, PASSWORD, None, "127.0.0.1")
    token = (await services.login.login(email, PASSWORD, "127.0.0.1")).access.token
    assert jwt.get_unverified_header(token)["alg"] == algorithm

    api_keys = ApiKeyVerifier(engine)
    tokens = gateway_token_verifier(settings, engine)
    state = SimpleNamespace(credential_verifiers=[api_keys, tokens])
    token_request = _request(state, token)
    results[f"access_token_{algorithm}_repeat"] = await _rate(lambda: authenticate(token_request), n)
    uncached_tokens = gateway_token_verifier(settings, engine, cache_size=0)
    first_sight = _request(SimpleNamespace(credential_verifiers=[api_keys, uncached_tokens]), token)
    results[f"access_token_{algorithm}_first_sight"] = await _rate(lambda: authenticate(first_sight), n)

    public_key = jwt.PyJWK((await services.key_ring.jwks())["keys"][-1]).key
    options = {"audience": settings.auth_audience, "issuer": settings.auth_issuer}

    async def bare_decode() -> None:
        jwt.decode(token, public_key, algorithms=[algorithm], **options)

    results[f"raw_jwt_decode_{algorithm}"] = await _rate(bare_decode, n)

    if algorithm == "EdDSA":
        principal = await tokens(token)
        issued = await create_api_key(engine, principal.tenant_id, name="bench")
        key_request = _request(state, issued.key)
        results["api_key_cached"] = await _rate(lambda: authenticate(key_request), n)
        cold_state = SimpleNamespace(credential_verifiers=[ApiKeyVerifier(engine, ttl_s=0), tokens])
        cold_request = _request(cold_state, issued.key)
        results["api_key_db_lookup"] = await _rate(lambda: authenticate(cold_request), max(n // 10, 200))
        table = {hash_key(issued.key): principal}

        async def bare_key_lookup() -> None:
            table.get(hashlib.sha256(issued.key.encode()).hexdigest())

        results["raw_sha256_dict_lookup"] = await _rate(bare_key_lookup, n)
    await tokens.aclose()
    await uncached_tokens.aclose()
    services.close()
    await engine.dispose()
    return results


# ---- 2. p99 of a cheap endpoint during a login burst ---------------------------------------------------


def serve(port: int, on_loop: bool) -> None:
    """Subprocess entry: the auth service under uvicorn, events discarded (no Kafka needed)."""
    import uvicorn

    from gateway.auth.app import create_auth_app
    from gateway.auth.passwords import PasswordHasher
    from lotabots.settings import Settings

    if on_loop:  # the control: what a login burst does when bcrypt runs on the event loop
        async def inline(self, fn, *args):  # type: ignore[no-untyped-def]
            return fn(*args)

        PasswordHasher._run = inline  # type: ignore[method-assign]
    app = create_auth_app(Settings(), events=DiscardEvents())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _probe(base: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            r = await client.get("/healthz")
            latencies.append((time.perf_counter() - start) * 1000)
            assert r.status_code == 200
            await asyncio.sleep(0.005)
    return latencies


async def _burst(base: str, email: str, concurrency: int, stop: asyncio.Event) -> int:
    done = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal done
        while not stop.is_set():
            r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            done += 1

    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
    return done


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 2 else float("nan")


async def burst_latency(base: str, seconds: float, concurrency: int) -> dict[str, float]:
    email = f"burst-{time.time_ns()}@example.com"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 202, r.text
    idle = await _probe(base, seconds)
    stop = asyncio.Event()
    burst = asyncio.create_task(_burst(base, email, concurrency, stop))
    await asyncio.sleep(0.5)
    start = time.perf_counter()
    busy = await _probe(base, seconds)
    stop.set()
    logins = await burst
    elapsed = time.perf_counter() - start + 0.5
    return {"idle_p50_ms": _pct(idle, 50), "idle_p99_ms": _pct(idle, 99), "burst_p50_ms": _pct(busy, 50),
            "burst_p99_ms": _pct(busy, 99), "logins_per_s": logins / elapsed, "probes": len(busy)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verifications", type=int, default=20000)
    ap.add_argument("--probe-seconds", type=float, default=8)
    ap.add_argument("--burst", type=int, default=16, help="concurrent login loops")
    ap.add_argument("--rounds", type=int, default=12, help="bcrypt cost for the burst")
    ap.add_argument("--hash-workers", type=int, default=0, help="bcrypt threads (0: the default, CPUs - 1)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--on-loop", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.on_loop)
        return

    from gateway.auth.key_sealing import new_kek
    from lotabots.db import migrate
    from tests.services import free_ports, postgres_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    os.environ["LOTABOTS_AUTH_KEY_ENCRYPTION_KEY"] = new_kek()  # one KEK for this run and its server processes
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    with postgres_service(tmp / "pg") as pg:
        migrate(pg.url)
        out["verifications_per_s"] = asyncio.run(verification_rates(pg.url, tmp / "data", args.verifications))
        for mode in ("thread_pool", "on_loop"):
            port = free_ports(1)[0]
            env = {**os.environ, "LOTABOTS_DATABASE_URL": pg.url, "LOTABOTS_DATA_DIR": str(tmp / "data"),
                   "LOTABOTS_AUTH_BCRYPT_ROUNDS": str(args.rounds),
                   "LOTABOTS_AUTH_HASH_WORKERS": str(args.hash_workers), "LOTABOTS_AUTH_REQUIRE_EMAIL_VERIFICATION": "false",
                   "LOTABOTS_AUTH_LOCKOUT_ADDRESS_THRESHOLD": str(10**9), "LOTABOTS_LOG_LEVEL": "WARNING",
                   "LOTABOTS_AUTH_REGISTRATION_OPEN": "true"}
            cmd = [sys.executable, str(Path(__file__)), "--serve", str(port)] + (["--on-loop"] if mode == "on_loop" else [])
            server = subprocess.Popen(cmd, cwd=REPO / "bench", env=env)
            try:
                wait_http(f"http://127.0.0.1:{port}/readyz")
                out[f"login_burst_{mode}"] = asyncio.run(
                    burst_latency(f"http://127.0.0.1:{port}", args.probe_seconds, args.burst))
            finally:
                server.terminate()
                server.wait(30)

    v = out["verifications_per_s"]
    print(f"machine: {out['cpus']} CPUs; PostgreSQL; one asyncio loop")
    print("verifications/s through gateway.security.authenticate (the gateway's auth dependency):")
    for alg in ("EdDSA", "ES256"):
        raw = v[f"raw_jwt_decode_{alg}"]
        for seen in ("first_sight", "repeat"):
            a = v[f"access_token_{alg}_{seen}"]
            print(f"  access token {alg:5} {seen:11}: {a:9.0f}/s   bare jwt.decode {raw:9.0f}/s   ratio {a / raw:6.2f}")
    print(f"  API key (cached)              : {v['api_key_cached']:9.0f}/s   bare sha256+dict {v['raw_sha256_dict_lookup']:9.0f}/s"
          f"   ratio {v['api_key_cached'] / v['raw_sha256_dict_lookup']:.2f}")
    print(f"  API key (DB read)             : {v['api_key_db_lookup']:9.0f}/s   (cache TTL 0: one PostgreSQL read per call)")
    print(f"GET /healthz latency of the auth service, idle vs during {args.burst} concurrent login loops "
          f"(bcrypt cost {args.rounds}):")
    for mode in ("thread_pool", "on_loop"):
        b = out[f"login_burst_{mode}"]
        print(f"  bcrypt {mode:11}: idle p50 {b['idle_p50_ms']:6.2f} p99 {b['idle_p99_ms']:7.2f} ms | burst p50 "
              f"{b['burst_p50_ms']:7.2f} p99 {b['burst_p99_ms']:8.2f} ms | p99 ratio "
              f"{b['burst_p99_ms'] / b['idle_p99_ms']:6.1f}x | {b['logins_per_s']:.1f} logins/s")
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    (REPO / "bench" / "out" / "auth.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
