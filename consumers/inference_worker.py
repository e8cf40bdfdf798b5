"""The inference worker: consumer group `inference.<tier>` → batch scheduler → lifecycle events on `results`.

Pipeline per message: decode (poison → `requests.dlq`, plus a `failed` event when the request id is
readable) → skip if canceled → tokenize → run in the batch scheduler → produce the terminal event →
mark the offset done. Offsets are committed only up to the lowest request still in flight, so a
SIGKILL at any instant re-delivers every request whose terminal event was not yet produced.
The consumer keeps polling during long generations; when the scheduler is full it pauses its
partitions (back-pressure) instead of buffering.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge

from consumers.control import ControlListener
from consumers.dead_letter import DeadLetterStep
from consumers.offsets import OffsetTracker
from consumers.token_publisher import TokenPublisher
from inference.autonomy_profiles import AutonomyProfiles
from inference.engine import ChatModel, open_scheduler
from inference.prefix_cache import PREFIX_CACHE_METRICS
from inference.scheduler import BatchScheduler, SequenceParams, SequenceResult
from lotabots.ids import new_id
from lotabots.kafka_io import decode, encode, make_consumer, make_producer
from lotabots.settings import Settings
from lotabots.usage_events import UsageEmitter
from schemas.autonomy_levels import NO_AI_FINISH_REASON, PLATFORM_DEFAULT_LEVEL
from schemas.events import InferenceRequest, LifecycleType, RequestLifecycleEvent
from schemas.topics import REQUESTS_DLQ, RESULTS, request_topic

if TYPE_CHECKING:
    from inference.triton_backend import RemoteGenerationScheduler

log = logging.getLogger(__name__)

REQUESTS_DONE = Counter("lotabots_inference_requests_total", "requests finished", ["tier", "outcome"])
TOKENS_OUT = Counter("lotabots_inference_tokens_total", "tokens generated", ["tier"])
IN_FLIGHT = Gauge("lotabots_inference_in_flight", "sequences in the batch scheduler", ["tier"])


@dataclass
class _InFlight:
    request: InferenceRequest
    offsets: list[tuple[TopicPartition, int]] = field(default_factory=list)
    attempt: str = field(default_factory=lambda: new_id("run"))  # this run of the request (token stream)


class InferenceWorker:
    """One member of the tier's consumer group."""

    def __init__(self, settings: Settings, tier: str, model: ChatModel, *, max_batch: int | None = None) -> None:
        self.settings = settings
        self.tier = tier
        self.model = model
        self.name = f"{socket.gethostname()}:{os.getpid()}:{tier}"
        self.scheduler: BatchScheduler | RemoteGenerationScheduler
        if settings.inference_backend == "triton":  # a remote server batches; we bound concurrent calls
            from inference.triton_backend import RemoteGenerationScheduler

            self.scheduler = RemoteGenerationScheduler.from_settings(model, settings, max_batch)  # type: ignore[arg-type]
        else:
            self.scheduler = open_scheduler(model, settings, max_batch)
            if self.scheduler.prefix_cache is not None:
                PREFIX_CACHE_METRICS.watch(tier, self.scheduler.prefix_cache)
        self.tokens: TokenPublisher | None = None
        self.offsets = OffsetTracker()
        # levels of autonomy: per-level prompt template and generation settings (docs/autonomy.md)
        self.autonomy = AutonomyProfiles.load(settings.autonomy_profiles_path)
        self.in_flight: dict[str, _InFlight] = {}
        self._stop = asyncio.Event()
        self._paused = False
        self._last_commit = 0.0
        self._finishing: set[asyncio.Future[None]] = set()  # terminal events being produced

    # ---- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.producer = make_producer(self.settings, client_id=self.name)
        await self.producer.start()
        self.usage = UsageEmitter(self.producer)
        self.model_name = _model_name(self.model)
        self.dlq = DeadLetterStep(self.producer, REQUESTS_DLQ, self.name)
        if self.settings.inference_stream_tokens and isinstance(self.scheduler, BatchScheduler):
            self.tokens = TokenPublisher(self.producer, self.name, self.tier, self._attempt_of)
            await self.tokens.start()
            self.scheduler.on_tokens = self.tokens.publish_from_engine(self.loop)
        self.control = ControlListener(self.settings, self.tier, on_cancel=self.scheduler.cancel)
        await self.control.start()
        self.consumer = make_consumer(
            self.settings, group_id=f"inference.{self.tier}", client_id=self.name, max_poll_records=64,
        )
        self.consumer.subscribe([request_topic(self.tier)], listener=_HandBack(self))
        await self.consumer.start()
        self.scheduler.start()
        log.info("inference worker %s consuming %s", self.name, request_topic(self.tier))
        try:
            while not self._stop.is_set():
                await self._poll_once()
            await self._drain()
        finally:
            self.scheduler.stop()
            if self.tokens is not None:
                await self.tokens.stop()
            await self.control.stop()
            await self.consumer.stop()
            await self.producer.stop()

    def request_stop(self) -> None:
        self._stop.set()

    async def _drain(self) -> None:
        """Graceful stop: finish what is in flight (bounded), commit, then leave the group."""
        self.consumer.pause(*self.consumer.assignment())
        deadline = time.monotonic() + self.settings.inference_drain_timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for request_id in list(self.in_flight):  # not finished in time: hand back to the next owner
            self.scheduler.drop(request_id)
        await self.settle_finishing()
        await self._commit(force=True)

    async def settle_finishing(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Let terminal events already being produced land and mark their offsets done.

        Called before partitions are handed over: a result produced after the hand-over would leave
        its offset uncommitted, and the next owner would run the request to completion again.
        """
        deadline = time.monotonic() + timeout
        while self._finishing and time.monotonic() < deadline:
            await asyncio.wait(set(self._finishing), timeout=max(0.0, deadline - time.monotonic()))

    # ---- consume ------------------------------------------------------------------------------
    async def _poll_once(self) -> None:
        room = self.scheduler.has_capacity()
        assigned = self.consumer.assignment()
        if not room and not self._paused and assigned:
            self.consumer.pause(*assigned)
            self._paused = True
        elif room and self._paused:
            self.consumer.resume(*assigned)
            self._paused = False
        free = max(1, self.scheduler.max_batch - self.scheduler.in_flight())
        batch = await self.consumer.getmany(timeout_ms=100, max_records=free)
        for tp, records in batch.items():
            for record in records:
                await self._take(tp, record)
        IN_FLIGHT.labels(self.tier).set(len(self.in_flight))
        await self._commit()

    async def _take(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.offsets.begin(tp, record.offset)
        try:
            request = decode(InferenceRequest, record.value)
        except Exception as exc:
            await self._poison(tp, record, exc)
            return
        if request.request_id in self.in_flight:  # duplicate delivery while it runs: finish both at once
            self.in_flight[request.request_id].offsets.append((tp, record.offset))
            return
        self.in_flight[request.request_id] = _InFlight(request, [(tp, record.offset)])
        if self.control.is_canceled(request.request_id):
            await self._produce_terminal(request, LifecycleType.CANCELED, finish_reason="canceled",
                                         prompt_tokens=0, completion_tokens=0)
            return
        profile = self.autonomy.for_level(request.autonomy_level)
        if not profile.level.invokes_model:  # No AI ends in the gateway; never run the model for one
            await self._produce_terminal(request, LifecycleType.SUCCEEDED, finish_reason=NO_AI_FINISH_REASON,
                                         prompt_tokens=0, completion_tokens=0)
            return
        try:
            prompt = self.model.encode_chat(profile.messages([m.model_dump() for m in request.messages]))
        except Exception as exc:
            await self._produce_terminal(request, LifecycleType.FAILED, error_code="invalid_prompt",
                                         error_message=str(exc)[:500])
            return
        p = request.params
        self.scheduler.submit(
            request.request_id, prompt,
            SequenceParams(profile.cap_tokens(p.max_tokens),
                           p.temperature if profile.temperature is None else profile.temperature,
                           p.top_p, p.seed, tuple(p.stop)),
            on_finish=lambda r: self.loop.call_soon_threadsafe(self._spawn_finish, r),
            on_start=lambda rid, at: self.loop.call_soon_threadsafe(self._spawn_started, rid, at),
        )

    async def _poison(self, tp: TopicPartition, record: ConsumerRecord, exc: Exception) -> None:
        await self.dlq.send(record, "invalid_request_message", str(exc))
        request_id = _readable_request_id(record.value)
        if request_id:  # enough to tell the client why: fail it with a clear code
            event = RequestLifecycleEvent(
                event_id=new_id("evt"), request_id=request_id, tenant_id="", tier=self.tier,
                type=LifecycleType.FAILED, at=datetime.now(UTC), worker=self.name,
                error_code="invalid_request_message", error_message=str(exc)[:500], finish_reason="error",
            )
            await self._send_result(event)
        self.offsets.done(tp, record.offset)
        REQUESTS_DONE.labels(self.tier, "dead_lettered").inc()

    # ---- produce ------------------------------------------------------------------------------
    def _attempt_of(self, request_id: str) -> str | None:
        entry = self.in_flight.get(request_id)
        return entry.attempt if entry is not None else None

    def _spawn_started(self, request_id: str, at: float) -> None:
        entry = self.in_flight.get(request_id)
        if entry is None:
            return
        r = entry.request
        event = RequestLifecycleEvent(
            event_id=new_id("evt"), request_id=r.request_id, tenant_id=r.tenant_id, tier=r.tier,
            type=LifecycleType.STARTED, at=datetime.now(UTC), worker=self.name,
            started_at=datetime.fromtimestamp(at, UTC),
        )
        asyncio.ensure_future(self._send_result(event))

    def _spawn_finish(self, result: SequenceResult) -> None:
        entry = self.in_flight.get(result.seq_id)
        if entry is None:
            return
        kind = {"canceled": LifecycleType.CANCELED, "error": LifecycleType.FAILED}.get(
            result.finish_reason, LifecycleType.SUCCEEDED)
        if kind is LifecycleType.SUCCEEDED:  # Collaborator and Expert end awaiting the user's decision
            kind = self.autonomy.for_level(entry.request.autonomy_level).ends
        finishing = asyncio.ensure_future(self._produce_terminal(
            entry.request, kind, output=result.text if kind is not LifecycleType.FAILED else None,
            finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, error_code=result.error_code,
            error_message=result.error_message, started_at=_ts(result.started_at),
            first_token_at=_ts(result.first_token_at), finished_at=_ts(result.finished_at),
        ))
        self._finishing.add(finishing)
        finishing.add_done_callback(self._finishing.discard)
        TOKENS_OUT.labels(self.tier).inc(result.completion_tokens)

    async def _produce_terminal(self, request: InferenceRequest, kind: LifecycleType, **fields) -> None:  # type: ignore[no-untyped-def]
        fields.setdefault("finished_at", datetime.now(UTC))
        event = RequestLifecycleEvent(
            event_id=new_id("evt"), request_id=request.request_id, tenant_id=request.tenant_id, tier=request.tier,
            type=kind, at=datetime.now(UTC), worker=self.name, **fields,
        )
        # the usage fact (tokens) and the terminal event both reach the broker before the offset is done
        await asyncio.gather(self._send_result(event), self._send_usage(request, event))
        entry = self.in_flight.pop(request.request_id, None)
        if entry is not None:
            for tp, offset in entry.offsets:
                self.offsets.done(tp, offset)
        REQUESTS_DONE.labels(self.tier, kind.value).inc()

    async def _send_result(self, event: RequestLifecycleEvent) -> None:
        # The terminal event must reach the broker before its offset may be committed: retry until it does.
        delay = 0.2
        while True:
            try:
                await self.producer.send_and_wait(RESULTS, encode(event), key=event.request_id.encode())
                return
            except Exception:
                log.exception("producing %s for %s failed; retrying", event.type, event.request_id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send_usage(self, request: InferenceRequest, event: RequestLifecycleEvent) -> None:
        finished = event.finished_at or event.at
        latency_ms = int((finished - request.submitted_at).total_seconds() * 1000)
        delay = 0.2
        while True:
            try:
                await self.usage.inference_completed(
                    tenant_id=request.tenant_id, tier=request.tier, request_id=request.request_id,
                    model=self.model_name, prompt_tokens=event.prompt_tokens or 0,
                    completion_tokens=event.completion_tokens or 0, latency_ms=latency_ms,
                    finish_reason=event.finish_reason or "", status=event.type.status.value, at=finished,
                    autonomy_level=request.autonomy_level or PLATFORM_DEFAULT_LEVEL.value,
                )
                return
            except Exception:
                log.exception("producing the usage fact of %s failed; retrying", request.request_id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < 0.2:
            return
        self._last_commit = now
        assigned = self.consumer.assignment()
        offsets = {tp: o for tp, o in self.offsets.committable().items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
            self.offsets.mark_committed(offsets)
        except Exception:
            log.warning("offset commit failed (will retry)", exc_info=True)


class _HandBack(ConsumerRebalanceListener):
    """On revocation: commit what is done, hand back what is still running (the next owner redoes it)."""

    def __init__(self, worker: InferenceWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        w = self.worker
        if not revoked:
            return
        await w.settle_finishing()
        # From here to the commit nothing awaits: a result that finishes meanwhile finds its request
        # handed back and is not produced, so no request completes both here and at the next owner.
        offsets = {tp: o for tp, o in w.offsets.committable().items() if tp in revoked}
        for request_id, entry in list(w.in_flight.items()):
            if all(tp in revoked for tp, _ in entry.offsets):
                w.scheduler.drop(request_id)
                del w.in_flight[request_id]
        w.offsets.forget(set(revoked))
        if offsets:
            try:
                await w.consumer.commit(offsets)
            except Exception:
                log.warning("commit on revoke failed", exc_info=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.worker._paused = False


def _readable_request_id(raw: bytes | None) -> str | None:
    try:
        import orjson

        value = orjson.loads(raw or b"")
        rid = value.get("request_id") if isinstance(value, dict) else None
        return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None
    except Exception:
        return None


def _model_name(model: object) -> str:
    """The model's name from its build config (what usage is billed under)."""
    config = getattr(model, "config", None)
    name = config.get("model") if isinstance(config, dict) else None
    return str(name or type(model).__name__)[:64]


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None
