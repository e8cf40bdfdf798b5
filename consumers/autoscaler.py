"""The local autoscaler: sizes each tier's inference consumer group from its lag, like KEDA does in Kubernetes.

Every ``autoscale_poll_interval_s`` it reads, per tier, the committed offsets of group
``inference.<tier>`` and the end offsets of ``requests.<tier>`` (consumers/consumer_lag.py), turns the
lag into a worker count with KEDA's Kafka-scaler rules and the HPA's stabilisation
(consumers/scaling.py), and starts or stops worker processes to match (consumers/worker_pool.py).
Scale-down is graceful: a stopped worker drains and commits before its partitions move.

It exposes ``lotabots_autoscaler_*`` gauges on its /metrics port (``LOTABOTS_METRICS_PORT``) and writes
a status file, ``<data_dir>/autoscaler/status.json``, that ``lotabots autoscale status`` (and
``lotabots status``, through :func:`status_lines`) prints.

Run it alone with ``lotabots autoscale`` or in-process: ``Autoscaler(settings, tiers).run()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from consumers.consumer_lag import LagReader, LagUnavailable
from consumers.scaling import ScaleBehaviour, ScaleDecision, ScaleStabiliser, ScalingBounds
from consumers.worker_pool import WorkerExit, WorkerPool
from lotabots.settings import Settings
from lotabots.tiers import TierConfig, TierPolicy

log = logging.getLogger(__name__)

LAG = Gauge("lotabots_autoscaler_lag", "consumer-group lag of the tier's request topic (messages)", ["tier"])
PARTITIONS = Gauge("lotabots_autoscaler_partitions", "partitions of the tier's request topic", ["tier"])
RECOMMENDED = Gauge("lotabots_autoscaler_recommended_workers", "ceil(lag/threshold) within bounds", ["tier"])
DESIRED = Gauge("lotabots_autoscaler_desired_workers", "workers wanted after stabilisation", ["tier"])
WORKERS = Gauge("lotabots_autoscaler_workers", "worker processes serving (actual)", ["tier"])
STOPPING = Gauge("lotabots_autoscaler_stopping_workers", "worker processes draining after SIGTERM", ["tier"])
SCALE_EVENTS = Counter("lotabots_autoscaler_scale_events_total", "desired worker changes", ["tier", "direction"])
WORKER_EXITS = Counter("lotabots_autoscaler_worker_exits_total", "worker processes ended", ["tier", "kind"])
LAG_ERRORS = Counter("lotabots_autoscaler_lag_read_errors_total", "lag reads that failed", ["tier"])


def status_path(settings: Settings) -> Path:
    return settings.data_dir / "autoscaler" / "status.json"


@dataclass
class TierScaler:
    """One tier under autoscaling: its bounds, its stabiliser and its worker processes."""

    tier: TierPolicy
    stabiliser: ScaleStabiliser
    pool: WorkerPool
    decision: ScaleDecision | None = None
    error: str | None = None
    last_scale: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"stopped": 0, "crashed": 0, "killed": 0})

    def status(self) -> dict[str, Any]:
        d, b = self.decision, self.stabiliser.bounds
        return {
            "topic": self.tier.request_topic,
            "group": self.tier.consumer_group,
            "lag": d.lag if d else None,
            "partitions": d.partitions if d else None,
            "lag_threshold": b.lag_threshold,
            "activation_lag_threshold": b.activation_lag_threshold,
            "workers_min": b.workers_min,
            "workers_max": b.workers_max,
            "recommended": d.recommended if d else None,
            "desired": self.stabiliser.target,
            "workers": self.pool.size,
            "stopping": len(self.pool.stopping),
            "worker_pids": [w.pid for w in self.pool.running],
            "stopping_pids": [w.pid for w in self.pool.stopping],
            "reason": d.reason if d else None,
            "last_scale": self.last_scale,
            "exits": dict(self.counts),
            "recent_exits": [
                {"pid": e.pid, "returncode": e.returncode, "kind": e.kind, "at": _iso(e.at)}
                for e in self.pool.exits
            ],
            "error": self.error,
        }


class Autoscaler:
    """Local-mode autoscaler for the given tiers (all tiers of the config by default)."""

    def __init__(
        self, settings: Settings, tiers: TierConfig, *, tier_names: list[str] | None = None,
        log_dir: Path | None = None, worker_env: dict[str, str] | None = None,
    ) -> None:
        names = tier_names or tiers.names
        unknown = [n for n in names if n not in tiers.tiers]
        if unknown:
            raise ValueError(f"unknown tier(s) {unknown}; the tier config has {tiers.names}")
        self.settings = settings
        behaviour = ScaleBehaviour.from_settings(settings)
        logs = log_dir or settings.data_dir / "logs"
        self.scalers: dict[str, TierScaler] = {}
        for name in names:
            policy = tiers.get(name)
            self.scalers[name] = TierScaler(
                policy,
                ScaleStabiliser(ScalingBounds.of(policy), behaviour),
                WorkerPool(name, log_dir=logs, drain_timeout_s=settings.inference_drain_timeout_s,
                           env=worker_env, metrics_port_base=_port_base(settings, names.index(name))),
            )
        self.status_file = status_path(settings)
        self._stop = asyncio.Event()
        self._started_at = time.time()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Poll, decide and reconcile until :meth:`request_stop`; then stop every worker gracefully."""
        reader = await self._connect()
        try:
            if reader is not None:
                log.info("autoscaling tiers %s every %.1fs", list(self.scalers),
                         self.settings.autoscale_poll_interval_s)
            while reader is not None and not self._stop.is_set():
                await self.tick(reader)
                await self._sleep(self.settings.autoscale_poll_interval_s)
        finally:
            if reader is not None:
                await reader.close()
            await asyncio.to_thread(self.stop_workers)

    async def _connect(self) -> LagReader | None:
        """A started lag reader; waits for the broker (workers could not run without it either)."""
        while not self._stop.is_set():
            reader = LagReader(self.settings.kafka_bootstrap)
            try:
                await reader.start()
                return reader
            except Exception as exc:
                log.warning("no Kafka broker at %s yet (%r); retrying", self.settings.kafka_bootstrap, exc)
                await reader.close()
                self.write_status("waiting for Kafka")
                await self._sleep(2.0)
        return None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def tick(self, reader: LagReader) -> None:
        """One control-loop pass over every tier, then the status file."""
        now = time.monotonic()
        for scaler in self.scalers.values():
            self._collect_exits(scaler)
            tier = scaler.tier.name
            try:
                lag = await reader.read(scaler.tier.consumer_group, scaler.tier.request_topic)
            except LagUnavailable as exc:
                # without a reading nothing is decided: keep the current size (and replace crashed workers)
                LAG_ERRORS.labels(tier).inc()
                if scaler.error != str(exc):
                    log.warning("tier %s: lag unavailable, holding at %d workers: %s",
                                tier, scaler.stabiliser.target, exc)
                scaler.error = str(exc)
            else:
                scaler.error = None
                decision = scaler.stabiliser.decide(now, lag.total, lag.partition_count)
                scaler.decision = decision
                if decision.direction != "none":
                    SCALE_EVENTS.labels(tier, decision.direction).inc()
                    scaler.last_scale = {"at": _iso(time.time()), "from": decision.previous,
                                         "to": decision.target, "lag": decision.lag, "reason": decision.reason}
                    log.info("tier %s: scale %s %d -> %d (lag %d, recommended %d, %s)", tier, decision.direction,
                             decision.previous, decision.target, decision.lag, decision.recommended,
                             decision.reason)
                LAG.labels(tier).set(decision.lag)
                PARTITIONS.labels(tier).set(decision.partitions)
                RECOMMENDED.labels(tier).set(decision.recommended)
            scaler.pool.scale_to(scaler.stabiliser.target)
            DESIRED.labels(tier).set(scaler.stabiliser.target)
            WORKERS.labels(tier).set(scaler.pool.size)
            STOPPING.labels(tier).set(len(scaler.pool.stopping))
        self.write_status("running")

    def stop_workers(self) -> None:
        """Blocking: SIGTERM every worker of every tier at once, wait for their drains, record the exits."""
        for scaler in self.scalers.values():
            scaler.pool.scale_to(0)
        for scaler in self.scalers.values():
            self._count_exits(scaler, scaler.pool.stop_all())
            WORKERS.labels(scaler.tier.name).set(0)
            STOPPING.labels(scaler.tier.name).set(0)
        self.write_status("stopped")

    def _collect_exits(self, scaler: TierScaler) -> None:
        self._count_exits(scaler, scaler.pool.reap())

    def _count_exits(self, scaler: TierScaler, exits: list[WorkerExit]) -> None:
        for ended in exits:
            scaler.counts[ended.kind] = scaler.counts.get(ended.kind, 0) + 1
            WORKER_EXITS.labels(scaler.tier.name, ended.kind).inc()

    def status(self, state: str) -> dict[str, Any]:
        return {
            "state": state,
            "pid": os.getpid(),
            "started_at": _iso(self._started_at),
            "updated_at": _iso(time.time()),
            "poll_interval_s": self.settings.autoscale_poll_interval_s,
            "kafka_bootstrap": self.settings.kafka_bootstrap,
            "tiers": {name: s.status() for name, s in self.scalers.items()},
        }

    def write_status(self, state: str) -> None:
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(state), indent=2))
        os.replace(tmp, self.status_file)  # readers never see half a file


def _port_base(settings: Settings, index: int) -> int:
    """Worker /metrics ports: 100 per tier above the configured base, in tier order (0 = none)."""
    base = settings.autoscale_worker_metrics_port_base
    return base + index * 100 if base else 0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# ---- status for `lotabots status` / `lotabots autoscale status` --------------------------------------

def read_status(settings: Settings) -> dict[str, Any] | None:
    """The last status the autoscaler wrote, with ``alive`` telling whether its process still runs."""
    path = status_path(settings)
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    status["alive"] = status.get("state") != "stopped" and _pid_alive(int(status.get("pid", 0)))
    return status


def status_lines(settings: Settings) -> list[str]:
    """Human lines: one header, then per tier lag, threshold, desired and actual workers."""
    status = read_status(settings)
    if status is None:
        return ["autoscaler: no status (not started: `lotabots autoscale`)"]
    head = (f"autoscaler pid {status['pid']}: {status['state']}, updated {status['updated_at']}" if status["alive"]
            else f"autoscaler: not running (last status {status['updated_at']}, {status['state']})")
    lines = [head]
    for name, t in status["tiers"].items():
        line = (f"  {name:<12} lag {_n(t['lag']):>6} (threshold {t['lag_threshold']}/worker)  "
                f"workers {t['workers']} (desired {t['desired']}, recommended {_n(t['recommended'])}, "
                f"bounds {t['workers_min']}..{t['workers_max']}, partitions {_n(t['partitions'])})")
        if t["stopping"]:
            line += f"  draining {t['stopping']}"
        if t.get("error"):
            line += f"  ERROR {t['error']}"
        lines.append(line)
    return lines


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- process entry point ---------------------------------------------------------------------------

def run_autoscaler(settings: Settings, tiers: TierConfig, tier_names: list[str] | None = None) -> None:
    """`lotabots autoscale`: run until SIGTERM/SIGINT, then stop the workers it started, gracefully."""
    from lotabots.health import serve_health

    async def main() -> None:
        scaler = Autoscaler(settings, tiers, tier_names=tier_names)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, scaler.request_stop)
        if settings.metrics_port:
            await serve_health(settings.metrics_port, lambda: True)
        await scaler.run()

    asyncio.run(main())
