"""The autoscaler's worker processes: graceful stops, SIGKILL after the drain budget, crash replacement.

Real child processes stand in for inference workers (a few lines of Python with the same signal
behaviour), so the pool's process handling is tested without Kafka. Time is a fake clock.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from consumers.worker_pool import STOP_GRACE_S, WorkerPool

# Behaves like an inference worker: reports ready, then runs until SIGTERM and exits 0 (its drain).
GRACEFUL = """
import os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
(out / f"ready-{os.getpid()}").write_text(os.environ.get("LOTABOTS_METRICS_PORT", ""))
while True:
    time.sleep(0.05)
"""
STUBBORN = GRACEFUL.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")
CRASHING = "import sys; sys.exit(3)"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(tmp_path: Path, script: str, clock: FakeClock, **kw) -> WorkerPool:  # type: ignore[no-untyped-def]
    return WorkerPool("pro", log_dir=tmp_path / "logs", drain_timeout_s=5.0, clock=clock,
                      argv=[sys.executable, "-c", script, str(tmp_path)], **kw)


def _wait(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _ready(tmp_path: Path, pool: WorkerPool) -> bool:
    return all((tmp_path / f"ready-{w.pid}").exists() for w in pool.running)


def test_scale_down_stops_the_newest_worker_gracefully(tmp_path: Path) -> None:
    clock = FakeClock()
    pool = _pool(tmp_path, GRACEFUL, clock)
    try:
        pool.scale_to(2)
        oldest, newest = [w.pid for w in pool.running]
        _wait(lambda: _ready(tmp_path, pool))
        pool.scale_to(1)
        assert [w.pid for w in pool.running] == [oldest] and [w.pid for w in pool.stopping] == [newest]
        assert pool.size == 1  # a draining worker no longer counts as serving
        ended = []
        _wait(lambda: bool(ended.extend(pool.reap()) or ended))
        assert [(e.pid, e.kind, e.returncode) for e in ended] == [(newest, "stopped", 0)]
    finally:
        pool.stop_all(timeout=10)


def test_a_worker_still_running_after_its_drain_budget_is_killed(tmp_path: Path) -> None:
    clock = FakeClock()
    pool = _pool(tmp_path, STUBBORN, clock)
    pool.scale_to(1)
    _wait(lambda: _ready(tmp_path, pool))
    pool.scale_to(0)
    time.sleep(0.3)
    assert pool.reap() == [] and len(pool.stopping) == 1  # ignoring SIGTERM, but within its budget
    clock.now += 5.0 + STOP_GRACE_S
    (ended,) = pool.reap()
    assert (ended.kind, ended.returncode) == ("killed", -signal.SIGKILL)
    assert not pool.stopping


def test_a_crashed_worker_is_replaced_after_a_back_off(tmp_path: Path) -> None:
    clock = FakeClock()
    pool = _pool(tmp_path, CRASHING, clock)
    pool.scale_to(1)
    first = pool.running[0].pid
    _wait(lambda: pool.running[0].proc.poll() is not None)
    (ended,) = pool.reap()
    assert (ended.pid, ended.kind, ended.returncode) == (first, "crashed", 3)
    pool.scale_to(1)
    assert pool.size == 0  # backing off: no restart in the same instant
    clock.now += 1.0
    pool.scale_to(1)
    assert pool.size == 1 and pool.running[0].pid != first
    pool.stop_all(timeout=10)


def test_workers_get_their_own_metrics_ports_not_the_autoscalers(tmp_path: Path) -> None:
    clock = FakeClock()
    pool = _pool(tmp_path, GRACEFUL, clock, env={"LOTABOTS_METRICS_PORT": "9100"}, metrics_port_base=9300)
    try:
        pool.scale_to(2)
        _wait(lambda: _ready(tmp_path, pool))
        ports = sorted((tmp_path / f"ready-{w.pid}").read_text() for w in pool.running)
        assert ports == ["9300", "9301"]
    finally:
        ended = pool.stop_all(timeout=10)
    assert sorted(e.kind for e in ended) == ["stopped", "stopped"]
