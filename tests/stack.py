"""A real LotaBots stack for integration tests: gateway, inference workers and result writer as processes.

Every process is started with `python -m lotabots.cli ...` under the test's environment, tracked by
PID, and stopped (or SIGKILLed, in failure tests) only by that PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from consumers.worker_pool import die_with_parent_preexec

REPO = Path(__file__).resolve().parent.parent


@dataclass
class StackProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StackProcess:
        fh = open(self.log, "ab")
        # die with the test process even if pytest itself is killed: no orphaned workers between runs
        self.proc = subprocess.Popen([sys.executable, "-m", "lotabots.cli", *self.argv], env=self.env,
                                     stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                     preexec_fn=die_with_parent_preexec())  # noqa: PLW1509
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (the failure the platform must survive)."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    gateway_url: str
    processes: list[StackProcess] = field(default_factory=list)

    def spawn(self, name: str, *argv: str, extra_env: dict[str, str] | None = None) -> StackProcess:
        p = StackProcess(name, list(argv), {**self.env, **(extra_env or {})}, self.log_dir / f"{name}.log")
        self.processes.append(p.start())
        return p

    def wait_gateway(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.gateway_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready; log: {(self.log_dir / 'gateway.log').read_text()[-3000:]}")

    def stop_all(self) -> None:
        for p in reversed(self.processes):
            p.stop()

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
