"""The chaos suite's own stack: every LotaBots process of a deployment, on its own PostgreSQL, Kafka and
chDB, each process a handle that can be SIGKILLed and started again.

Nothing here is shared with the rest of the suite: the chaos test stops PostgreSQL and kills brokers,
which no other test should feel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.services import free_ports
from tests.stack import Stack, StackProcess
from tests.webhooks.conftest import ALLOW_LOOPBACK, DISPATCHER_ENV  # the compressed retry schedule

SIMULATED = {"LOTABOTS_INFERENCE_BACKEND": "simulated", "LOTABOTS_SIMULATED_MS_PER_TOKEN": "20"}


@dataclass
class Member:
    """One process of the deployment: how to start it, and its health URL if it has one."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    health: str | None = None
    process: StackProcess | None = None
    kills: int = 0
    unexpected_exits: list[str] = field(default_factory=list)


@dataclass
class ChaosStack:
    """The processes, started from one environment; `kill` is SIGKILL, `start` a fresh process."""

    stack: Stack
    members: dict[str, Member]
    gateway_urls: list[str]
    usage_url: str

    def start(self, name: str) -> None:
        member = self.members[name]
        member.process = self.stack.spawn(name, *member.argv, extra_env=member.env)

    def kill(self, name: str) -> None:
        member = self.members[name]
        assert member.process is not None and member.process.alive(), f"{name} is not running"
        member.process.kill()
        member.kills += 1

    def alive(self, name: str) -> bool:
        process = self.members[name].process
        return process is not None and process.alive()

    def wait_healthy(self, names: list[str] | None = None, timeout: float = 180) -> None:
        pending = {n: m.health for n, m in self.members.items() if m.health and (names is None or n in names)}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for name, url in list(pending.items()):
                assert self.alive(name), f"{name} exited while starting:\n{self.stack.tail(name)}"
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        pending.pop(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        assert not pending, f"not healthy in {timeout}s: " + " | ".join(
            f"{n}: {self.stack.tail(n, 1500)}" for n in pending)

    def exited_by_themselves(self) -> dict[str, str]:
        """Processes that died without being killed: name -> the end of its log."""
        return {n: self.stack.tail(n, 2500) for n, m in self.members.items()
                if m.process is not None and not m.process.alive() and m.process.proc is not None
                and m.process.proc.returncode != -9}

    def stop(self) -> None:
        self.stack.stop_all()


def build_chaos_stack(env: dict[str, str], log_dir: Path) -> ChaosStack:
    """Two gateway replicas, the result writer, a worker per tier (pro on the real model; free and
    enterprise on the simulated backend, which costs time but no CPU), the webhook dispatcher, the Faust
    usage worker and the usage service (the only process that opens the chDB directory)."""
    gw_a, gw_b, usage_port, stream_health = free_ports(4)
    env = {**env, "LOTABOTS_USAGE_PORT": str(usage_port), "LOTABOTS_USAGE_STREAM_COMMIT_INTERVAL_S": "0.5"}
    stack = Stack(env, log_dir, f"http://127.0.0.1:{gw_a}")
    members = [
        Member("gateway-a", ("serve", "gateway"), {**ALLOW_LOOPBACK, "LOTABOTS_GATEWAY_PORT": str(gw_a)},
               f"http://127.0.0.1:{gw_a}/readyz"),
        Member("gateway-b", ("serve", "gateway"), {**ALLOW_LOOPBACK, "LOTABOTS_GATEWAY_PORT": str(gw_b)},
               f"http://127.0.0.1:{gw_b}/readyz"),
        Member("results", ("worker", "results")),
        Member("inference-pro", ("worker", "inference", "--tier", "pro")),
        Member("inference-free", ("worker", "inference", "--tier", "free"), dict(SIMULATED)),
        Member("inference-enterprise", ("worker", "inference", "--tier", "enterprise"), dict(SIMULATED)),
        Member("webhooks", ("worker", "webhooks"), dict(DISPATCHER_ENV)),
        Member("usage-stream", ("worker", "usage-stream"), {"LOTABOTS_METRICS_PORT": str(stream_health)},
               f"http://127.0.0.1:{stream_health}/healthz"),
        Member("usage-service", ("serve", "usage"), {}, f"http://127.0.0.1:{usage_port}/readyz"),
    ]
    chaos = ChaosStack(stack, {m.name: m for m in members},
                       [f"http://127.0.0.1:{gw_a}", f"http://127.0.0.1:{gw_b}"], f"http://127.0.0.1:{usage_port}")
    for member in members:
        chaos.start(member.name)
    return chaos

