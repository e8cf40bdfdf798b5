"""Shared helpers for benchmarks: start real services, run wrk, parse its figures."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _to_ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000 if unit == "s" else n * 60000


def ensure_wrk() -> str:
    """The `wrk` load generator: Debian's package (`apt-get install wrk`), installed here when run as root."""
    import os
    import shutil

    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("this bench needs wrk: `sudo apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`")
    return found


def run_wrk(url: str, lua: Path, *, connections: int, seconds: int, threads: int = 1) -> dict[str, float]:
    out = subprocess.run(
        [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: _to_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": pct.get("50", float("nan")), "p99_ms": pct.get("99", float("nan")),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0}


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its reaped children (from /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its live descendants (PostgreSQL backends, broker threads)."""
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            total += cpu_seconds(p)
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        stack += [int(c) for c in children]
    return total


def open_variant(model_dir: Path, spec: str, threads: int = 0):  # type: ignore[no-untyped-def]
    """Build (if needed) and load a variant for the engine benches, prepared for the scheduler.

    ``spec`` is a variant name, or ``main+single`` (e.g. ``fp32+int4-fp32``): ``main`` with its one-row
    steps on ``single``, as a worker with ``model_single_row_variant`` runs it."""
    from inference.engine import prepare
    from inference.model_build import build_model
    from inference.model_files import load_model

    main, _, single = spec.partition("+")
    for part in filter(None, (main, single)):
        build_model(model_dir, part)
    return prepare(load_model(model_dir, variant=main, threads=threads, device="cpu", single_row_variant=single or None))
