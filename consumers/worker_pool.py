"""The inference worker processes of one tier that the local autoscaler started, tracked by PID.

Starting a worker runs ``python -m lotabots.cli worker inference --tier T``. Stopping one sends SIGTERM
and nothing else until its deadline: the worker drains by itself (finishes in-flight generations for
``inference_drain_timeout_s``, hands the rest back, commits, leaves the group; see
consumers/inference_worker.py ``_drain``), so its partitions move to the others only after its work is
committed. Only a worker still alive ``STOP_GRACE_S`` after its drain budget gets SIGKILL, like the
kubelet after ``terminationGracePeriodSeconds``. A worker that dies on its own is replaced, with an
exponential back-off so a worker that cannot start does not spin.

Workers get SIGTERM when the autoscaler process dies (Linux ``PR_SET_PDEATHSIG``), so a killed
autoscaler leaves no orphans consuming behind the next one's back; they still drain gracefully.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STOP_GRACE_S = 8.0  # after the drain budget: time to commit, leave the group and exit
CRASH_BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 30.0  # a worker that lived this long before dying resets the back-off

_PR_SET_PDEATHSIG = 1


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGTERM the child when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return preexec


_PREEXEC = die_with_parent_preexec()


@dataclass
class WorkerProcess:
    """One inference worker process and what the pool knows about it."""

    tier: str
    slot: int
    proc: subprocess.Popen[bytes]
    started_at: float
    stop_deadline: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None


@dataclass(frozen=True)
class WorkerExit:
    """A worker that is gone: ``stopped`` (drained after SIGTERM), ``crashed`` or ``killed`` (SIGKILL)."""

    tier: str
    pid: int
    returncode: int
    kind: str
    at: float


class WorkerPool:
    """Starts and stops one tier's inference worker processes; never touches a PID it did not start."""

    def __init__(
        self, tier: str, *, log_dir: Path, drain_timeout_s: float, env: dict[str, str] | None = None,
        metrics_port_base: int = 0, argv: list[str] | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tier = tier
        self.log_dir = log_dir
        self.drain_timeout_s = drain_timeout_s
        self.env = dict(os.environ if env is None else env)
        self.metrics_port_base = metrics_port_base
        self.argv = argv or [sys.executable, "-m", "lotabots.cli", "worker", "inference", "--tier", tier]
        self.clock = clock
        self.running: list[WorkerProcess] = []
        self.stopping: list[WorkerProcess] = []
        self.exits: deque[WorkerExit] = deque(maxlen=20)
        self._crashes = 0
        self._next_start = 0.0

    @property
    def size(self) -> int:
        """Workers serving (started and not asked to stop): the 'actual' count."""
        return len(self.running)

    # ---- reconcile ------------------------------------------------------------------------------
    def reap(self) -> list[WorkerExit]:
        """Collect exited workers, SIGKILL stopping ones past their deadline; return what ended now."""
        now = self.clock()
        ended: list[WorkerExit] = []
        for w in list(self.running):
            rc = w.proc.poll()
            if rc is None:
                continue
            self.running.remove(w)
            lived = now - w.started_at
            self._crashes = 1 if lived >= HEALTHY_AFTER_S else self._crashes + 1
            self._next_start = now + min(CRASH_BACKOFF_MAX_S, 2.0 ** (self._crashes - 1))
            ended.append(self._exited(w, rc, "crashed"))
            log.warning("inference worker %s (tier %s) exited with %s after %.1fs; replacing it",
                        w.pid, self.tier, rc, lived)
        for w in list(self.stopping):
            rc = w.proc.poll()
            if rc is None and w.stop_deadline is not None and now >= w.stop_deadline:
                log.warning("inference worker %s (tier %s) still running after its drain budget; SIGKILL",
                            w.pid, self.tier)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                rc = w.proc.wait(10)
                self.stopping.remove(w)
                ended.append(self._exited(w, rc, "killed"))
            elif rc is not None:
                self.stopping.remove(w)
                ended.append(self._exited(w, rc, "stopped"))
        return ended

    def scale_to(self, n: int) -> None:
        """Start or stop workers until ``n`` serve (starts wait out a crash back-off)."""
        while len(self.running) < n and self.clock() >= self._next_start:
            self._start()
        while len(self.running) > n:
            self._stop(self.running[-1])  # newest first: the oldest have warm caches and settled partitions

    def stop_all(self, timeout: float | None = None) -> list[WorkerExit]:
        """SIGTERM every worker, wait for them to drain (bounded), SIGKILL what is left. Blocking."""
        for w in list(self.running):
            self._stop(w)
        limit = self.drain_timeout_s + STOP_GRACE_S if timeout is None else timeout
        deadline = time.monotonic() + limit
        ended: list[WorkerExit] = []
        while self.stopping and time.monotonic() < deadline:
            ended += self.reap()
            time.sleep(0.05)
        for w in self.stopping:
            w.stop_deadline = self.clock()  # due now
        ended += self.reap()
        return ended

    # ---- processes ------------------------------------------------------------------------------
    def _start(self) -> WorkerProcess:
        slot = self._free_slot()
        env = dict(self.env)
        # the autoscaler's own /metrics port must not be inherited: each worker gets its own or none
        env["LOTABOTS_METRICS_PORT"] = str(self.metrics_port_base + slot if self.metrics_port_base else 0)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"inference-{self.tier}-{slot}.log", "ab") as out:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_PREEXEC,  # noqa: PLW1509 - one prctl call, resolved up front
            )
        w = WorkerProcess(self.tier, slot, proc, self.clock())
        self.running.append(w)
        log.info("started inference worker %s (tier %s, slot %d)", w.pid, self.tier, slot)
        return w

    def _stop(self, w: WorkerProcess) -> None:
        self.running.remove(w)
        w.stop_deadline = self.clock() + self.drain_timeout_s + STOP_GRACE_S
        self.stopping.append(w)
        with contextlib.suppress(ProcessLookupError):
            w.proc.send_signal(signal.SIGTERM)
        log.info("stopping inference worker %s (tier %s): it drains, then leaves the group", w.pid, self.tier)

    def _free_slot(self) -> int:
        used = {w.slot for w in self.running + self.stopping}
        return next(i for i in range(len(used) + 1) if i not in used)

    def _exited(self, w: WorkerProcess, rc: int, kind: str) -> WorkerExit:
        ended = WorkerExit(self.tier, w.pid, rc, kind, time.time())
        self.exits.append(ended)
        return ended
