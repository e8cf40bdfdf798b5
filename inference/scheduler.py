"""Iteration-level (continuous) batching of decode steps on one model, in a dedicated engine thread.

Every loop iteration: apply cancellations, run at most one prefill chunk of one waiting sequence, then
advance every running sequence by one token in a single batched model call. Sequences join the batch
as soon as their prefill ends and leave it the step they finish, so the batch never waits for its
slowest member. The batch's KV cache is left-padded (all rows end at the same column; pad columns are
masked), so one forward call serves rows of different lengths; each row keeps its own real positions.
Prompts are never recomputed once a sequence is in the batch.

Chunked prefill: with no row decoding, a prompt is prefilled ``prefill_chunk`` tokens per call. While
rows decode, a prompt longer than ``prefill_whole_tokens`` is cut into chunks sized (from the measured
time of the previous chunk) to take about ``prefill_step_ratio`` of a decode step, so a 2,000-token
prompt stretches the running streams' token gaps by that share instead of stalling them for seconds;
the price is that prompt's own time to first token (bench/README.md, "Scheduler").

Prefix KV cache (inference.prefix_cache): a prompt starts its prefill after the longest prefix whose KV
a recent sequence left behind (a finished row's prompt and generated tokens, or a prefilled prompt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from inference.prefix_cache import PrefixCache
from inference.sampling import TokenSampler

log = logging.getLogger(__name__)


KV = tuple[np.ndarray, np.ndarray]

MIN_PREFILL_CHUNK = 4  # a prefill always advances by at least this many tokens per step


class DecoderModel(Protocol):
    """What the scheduler needs from a model (see inference.model_files.LoadedModel)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    eos_token_ids: frozenset[int]
    max_context: int

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
        past: list[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]: ...

    def decode(self, ids: list[int]) -> str: ...


class KVOps(Protocol):
    """Edits of the batch's left-padded KV cache; a model may bring its own (``model.kv_ops``, e.g. on
    the GPU, see inference.gpu_runner) so the cache never leaves its device."""

    def join(self, batch: list[KV], grow: int, new: list[KV], pad: int) -> list[KV]:
        """Left-pad the batch by ``grow`` columns and ``new`` (one row) by ``pad``; stack ``new`` below."""
        ...

    def keep(self, batch: list[KV], rows: list[int], first: int) -> list[KV]:
        """Only ``rows``, without the leading ``first`` columns."""
        ...


class NumpyKVOps:
    """:class:`KVOps` on host numpy arrays (the CPU execution provider's cache)."""

    def join(self, batch: list[KV], grow: int, new: list[KV], pad: int) -> list[KV]:
        return [
            (np.concatenate([_pad_left(k, grow), _pad_left(nk, pad)]),
             np.concatenate([_pad_left(v, grow), _pad_left(nv, pad)]))
            for (k, v), (nk, nv) in zip(batch, new, strict=True)
        ]

    def keep(self, batch: list[KV], rows: list[int], first: int) -> list[KV]:
        return [(np.ascontiguousarray(k[rows, :, first:]), np.ascontiguousarray(v[rows, :, first:]))
                for k, v in batch]


@dataclass(frozen=True)
class SequenceParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks only: always generate max_tokens


@dataclass(frozen=True)
class TokenDelta:
    """New text of one sequence after one engine step (what token streaming publishes).

    ``index`` counts the sequence's deltas from 1; ``position`` is how many characters of its text came
    before ``text``; ``tokens`` is how many generated tokens ``text`` covers.
    """

    seq_id: str
    index: int
    position: int
    text: str
    tokens: int


@dataclass
class SequenceResult:
    """How a sequence ended. `finish_reason`: stop | length | canceled | error."""

    seq_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    started_at: float
    first_token_at: float | None
    finished_at: float
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class _Sequence:
    seq_id: str
    prompt: list[int]
    params: SequenceParams
    on_start: Callable[[str, float], None] | None
    on_finish: Callable[[SequenceResult], None]
    sampler: TokenSampler
    generated: list[int] = field(default_factory=list)
    prefilled: int = 0
    past: list[tuple[np.ndarray, np.ndarray]] | None = None
    next_token: int = -1
    started_at: float = 0.0
    first_token_at: float | None = None
    canceled: bool = False
    dropped: bool = False  # handed back: finishes silently
    streamed: str = ""  # text already handed to on_tokens
    stream_broken: bool = False  # the decoded text changed behind what was streamed: the result settles it
    unstreamed_tokens: int = 0  # generated tokens not yet covered by a delta
    deltas: int = 0

    @property
    def reserved_tokens(self) -> int:
        return len(self.prompt) + self.params.max_tokens


class BatchScheduler:
    """Runs sequences on one model with continuous batching; thread-safe submit/cancel/drop."""

    def __init__(
        self, model: DecoderModel, *, max_batch: int = 16, max_tokens_in_flight: int = 32_768,
        prefill_chunk: int = 256, on_tokens: Callable[[list[TokenDelta]], None] | None = None,
        prefix_cache: PrefixCache | None = None, prefill_step_ratio: float = 0.75, prefill_whole_tokens: int = 64,
    ) -> None:
        self.model = model
        device_kv = getattr(model, "kv_ops", None)
        self._kv_ops: KVOps = device_kv or NumpyKVOps()
        # the prefix cache holds host arrays; a device-resident cache (inference.gpu_runner) does without
        self.prefix_cache = prefix_cache if prefix_cache is not None and prefix_cache.enabled and not device_kv \
            else None
        self.max_batch = max_batch
        self.max_tokens_in_flight = max_tokens_in_flight
        self.prefill_chunk = prefill_chunk
        # while rows decode, a prefill chunk is sized to take about this fraction of a decode step, so a
        # long prompt stretches the running streams' token gaps by at most that much (0 = always whole chunks)
        self.prefill_step_ratio = prefill_step_ratio
        self.prefill_whole_tokens = prefill_whole_tokens  # a prompt this short is not worth slicing
        self._decode_s = 0.0  # moving average of a decode step's time
        self._call_s = float("inf")  # the fastest model call seen: about the fixed cost of any call
        self._chunk_while_decoding = min(prefill_chunk, 32)  # adapted after every such chunk
        self._cond = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._by_id: dict[str, _Sequence] = {}
        # a sequence submitted again while its handed-back (dropped) run is still leaving the engine:
        # it starts when that run is gone (a worker that keeps a partition across a rebalance re-reads it)
        self._resubmitted: dict[str, _Sequence] = {}
        self._rows: list[_Sequence] = []  # the running batch, in KV row order
        self._kv: list[tuple[np.ndarray, np.ndarray]] = []
        self._mask = np.zeros((0, 0), dtype=np.int64)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.tokens_generated = 0
        # token streaming: called from the engine thread once per engine step with every sequence's new
        # text (one list per step, so a caller can publish all of them together)
        self.on_tokens = on_tokens
        self._step_deltas: list[TokenDelta] = []

    # ---- public, any thread -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join()

    def submit(
        self, seq_id: str, prompt: list[int], params: SequenceParams,
        on_finish: Callable[[SequenceResult], None], on_start: Callable[[str, float], None] | None = None,
    ) -> None:
        now = time.time()
        if not prompt:
            on_finish(_error(seq_id, 0, now, "empty_prompt", "the prompt has no tokens"))
            return
        if len(prompt) + params.max_tokens > self.max_context:
            on_finish(_error(seq_id, len(prompt), now, "context_length_exceeded",
                             f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                             f"model's context of {self.max_context}"))
            return
        seq = _Sequence(seq_id, list(prompt), params, on_start, on_finish,
                        TokenSampler(params.temperature, params.top_p, params.seed))
        with self._cond:
            running = self._by_id.get(seq_id)
            if running is not None:
                if running.dropped:
                    self._resubmitted[seq_id] = seq
                return  # else already running: a duplicate delivery of the same request
            self._by_id[seq_id] = seq
            self._waiting.append(seq)
            self._cond.notify_all()

    def cancel(self, seq_id: str) -> bool:
        """Stop a sequence before its next step; it finishes with reason `canceled`."""
        with self._cond:
            seq = self._resubmitted.get(seq_id) or self._by_id.get(seq_id)
            if seq is None:
                return False
            seq.canceled = True
            self._cond.notify_all()
            return True

    def drop(self, seq_id: str) -> None:
        """Hand a sequence back (its partition was revoked): stop it without a result."""
        with self._cond:
            self._resubmitted.pop(seq_id, None)
            seq = self._by_id.get(seq_id)
            if seq is not None:
                seq.canceled = seq.dropped = True
                self._cond.notify_all()

    @property
    def max_context(self) -> int:
        """The longest sequence (prompt + max_tokens) this scheduler runs."""
        return int(self.model.max_context)

    def has_capacity(self) -> bool:
        with self._cond:
            return self._in_flight_count() < self.max_batch and self._reserved() < self.max_tokens_in_flight

    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight_count()

    def _in_flight_count(self) -> int:
        return len(self._by_id)

    def _reserved(self) -> int:
        return sum(s.reserved_tokens for s in self._by_id.values())

    # ---- engine thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._rows:
                    self._cond.wait()
                if self._stopping:
                    return
                canceled_rows = [s for s in self._rows if s.canceled]
                canceled_waiting = [s for s in self._waiting if s.canceled]
                for s in canceled_waiting:
                    self._waiting.remove(s)
                admit = None
                if self._waiting and len(self._rows) < self.max_batch:
                    admit = self._waiting[0]
            for s in canceled_waiting:
                self._finish(s, "canceled")
            if canceled_rows:
                self._remove_rows(canceled_rows)
                for s in canceled_rows:
                    self._finish(s, "canceled")
            try:
                if admit is not None:
                    self._prefill_chunk(admit)
                    self._flush_deltas()  # a first token leaves now, not after the batch's decode step
                if self._rows:
                    self._decode_step()
                self._flush_deltas()
            except Exception as exc:  # a failing model call fails the sequences it touched, not the worker
                log.exception("engine step failed")
                victims = list(self._rows) + ([admit] if admit is not None and admit not in self._rows else [])
                self._reset_batch()
                with self._cond:
                    for s in victims:
                        if s in self._waiting:
                            self._waiting.remove(s)
                for s in victims:
                    self._finish(s, "error", "inference_error", f"{type(exc).__name__}: {exc}")

    def _prefill_chunk(self, seq: _Sequence) -> None:
        if seq.prefilled == 0:
            seq.started_at = time.time()
            if seq.on_start:
                seq.on_start(seq.seq_id, seq.started_at)
            self._start_prefill(seq)
        start = seq.prefilled
        interleaved = bool(self._rows) and self.prefill_step_ratio > 0 \
            and len(seq.prompt) - start > self.prefill_whole_tokens
        end = min(len(seq.prompt), start + (self._chunk_while_decoding if interleaved else self.prefill_chunk))
        ids = np.asarray([seq.prompt[start:end]], dtype=np.int64)
        pos = np.arange(start, end, dtype=np.int64)[None, :]
        began = time.perf_counter()
        logits = self._prefill_forward(seq, ids, pos)
        took = max(time.perf_counter() - began, 1e-4)
        self._call_s = min(self._call_s, took)
        if interleaved:
            self._adapt_chunk(end - start, took)
        seq.prefilled = end
        if end < len(seq.prompt):
            return
        with self._cond:
            self._waiting.popleft()
        if self.prefix_cache is not None:
            self.prefix_cache.insert(seq.prompt, self._prefilled_kv(seq))
        token = seq.sampler(logits[0])
        seq.first_token_at = time.time()
        if self._accept_token(seq, token):
            self._join_batch(seq)
        seq.past = None

    # ---- the KV layout: a left-padded batch cache (inference.kv_slots.SlotScheduler: fixed slots) ----
    def _start_prefill(self, seq: _Sequence) -> None:
        """A sequence's prefill begins: an empty KV cache, or the longest cached prefix's."""
        empty_past = getattr(self.model, "empty_past", None)  # the model's KV dtype and device
        seq.past = empty_past(1) if empty_past is not None else [
            (np.zeros((1, self.model.num_kv_heads, 0, self.model.head_dim), np.float32),) * 2
            for _ in range(self.model.num_layers)
        ]
        hit = self.prefix_cache.lookup(seq.prompt) if self.prefix_cache is not None else None
        if hit is not None:
            seq.past, seq.prefilled = hit.past, hit.tokens

    def _prefill_forward(self, seq: _Sequence, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Prefill ``ids`` (one row) at positions ``pos``; the last position's logits."""
        assert seq.past is not None
        mask = np.ones((1, int(pos[0, -1]) + 1), dtype=np.int64)
        logits, seq.past = self.model.forward(ids, mask, pos, seq.past)
        return logits

    def _prefilled_kv(self, seq: _Sequence) -> list[KV]:
        """The KV of a fully prefilled prompt, for the prefix cache."""
        assert seq.past is not None
        return seq.past

    def _decode_forward(self, rows: list[_Sequence]) -> np.ndarray:
        """One token of every row: the batch's logits, in row order."""
        ids = np.asarray([[s.next_token] for s in rows], dtype=np.int64)
        pos = np.asarray([[len(s.prompt) + len(s.generated) - 1] for s in rows], dtype=np.int64)
        mask = np.concatenate([self._mask, np.ones((len(rows), 1), np.int64)], axis=1)
        logits, self._kv = self.model.forward(ids, mask, pos, self._kv)
        self._mask = mask
        return logits

    def _row_kv(self, i: int) -> tuple[int, list[KV]]:
        """Row ``i``'s length and KV (its own columns, one row), for the prefix cache."""
        width = self._mask.shape[1]
        length = int(self._mask[i].sum())  # left-padded: the row's columns are the last `length`
        return length, [(np.ascontiguousarray(k[i:i + 1, :, width - length:]),
                         np.ascontiguousarray(v[i:i + 1, :, width - length:])) for k, v in self._kv]

    def _reset_batch(self) -> None:
        self._rows, self._kv, self._mask = [], [], np.zeros((0, 0), dtype=np.int64)

    def _adapt_chunk(self, tokens: int, took: float) -> None:
        """Size the next slice from this one. Its cost grows with the tokens it computes and the context
        they attend to; scale it towards the target share of a decode step. Every call also has a fixed
        cost (about a one-row decode step): a target below twice that would spend each slice on it."""
        if self._decode_s > 0:
            target = max(self.prefill_step_ratio * self._decode_s, 2 * self._call_s)
            self._chunk_while_decoding = next_prefill_chunk(tokens, took, target, self.prefill_chunk)

    def _join_batch(self, seq: _Sequence) -> None:
        assert seq.past is not None
        length = seq.past[0][0].shape[2]
        width = self._mask.shape[1]
        if not self._rows:
            self._kv = [(k, v) for k, v in seq.past]
            self._mask = np.ones((1, length), dtype=np.int64)
            self._rows = [seq]
            return
        grow = max(0, length - width)  # widen the batch on the left
        if grow:
            self._mask = np.pad(self._mask, ((0, 0), (grow, 0)))
            width = length
        pad = width - length
        self._kv = self._kv_ops.join(self._kv, grow, seq.past, pad)
        row_mask = np.concatenate([np.zeros(pad, np.int64), np.ones(length, np.int64)])[None, :]
        self._mask = np.concatenate([self._mask, row_mask])
        self._rows.append(seq)

    def _decode_step(self) -> None:
        rows = self._rows
        began = time.perf_counter()
        logits = self._decode_forward(rows)
        took = time.perf_counter() - began
        self._call_s = min(self._call_s, took)
        self._decode_s = took if self._decode_s == 0 else 0.8 * self._decode_s + 0.2 * took
        self.steps += 1
        done = [s for i, s in enumerate(rows) if not self._accept_token(s, s.sampler(logits[i]))]
        if done:
            if self.prefix_cache is not None:
                self._cache_rows(done)
            self._remove_rows(done)

    def _cache_rows(self, leaving: list[_Sequence]) -> None:
        """Keep finished rows' KV (prompt and the generated tokens fed so far) for follow-up turns."""
        assert self.prefix_cache is not None
        for i, s in enumerate(self._rows):
            if s not in leaving or s.canceled:
                continue
            length, past = self._row_kv(i)
            self.prefix_cache.insert((s.prompt + s.generated)[:length], past)

    def _accept_token(self, seq: _Sequence, token: int) -> bool:
        """Record a sampled token; return False (and finish the sequence) when it ends."""
        self.tokens_generated += 1
        if token in self.model.eos_token_ids and not seq.params.ignore_eos:
            self._finish(seq, "stop", eos=True)
            return False
        seq.generated.append(token)
        seq.next_token = token
        text = None
        if seq.params.stop:
            text = self.model.decode(seq.generated)
            if any(stop in text for stop in seq.params.stop):
                self._finish(seq, "stop")
                return False
        if len(seq.generated) >= seq.params.max_tokens:
            self._finish(seq, "length")  # the last delta travels in the final result
            return False
        if self.on_tokens is not None:
            self._stream(seq, self.model.decode(seq.generated) if text is None else text)
        return True

    def _stream(self, seq: _Sequence, text: str) -> None:
        """Queue the part of ``text`` that can no longer change: not a trailing partial character, not a
        tail that could still become a stop string (the final result cuts stop strings off)."""
        seq.unstreamed_tokens += 1
        safe = len(text.rstrip("\ufffd"))
        for stop in seq.params.stop:
            for k in range(min(len(stop) - 1, safe), 0, -1):
                if text.endswith(stop[:k], 0, safe):
                    safe -= k
                    break
        done = len(seq.streamed)
        if seq.stream_broken or safe <= done:
            return
        if not text.startswith(seq.streamed):
            seq.stream_broken = True
            return
        last = self._step_deltas[-1] if self._step_deltas else None
        if last is not None and last.seq_id == seq.seq_id:  # never two deltas of a sequence in one flush
            self._step_deltas[-1] = TokenDelta(seq.seq_id, last.index, last.position,
                                               last.text + text[done:safe], last.tokens + seq.unstreamed_tokens)
        else:
            seq.deltas += 1
            self._step_deltas.append(TokenDelta(seq.seq_id, seq.deltas, done, text[done:safe],
                                                seq.unstreamed_tokens))
        seq.streamed, seq.unstreamed_tokens = text[:safe], 0

    def _flush_deltas(self) -> None:
        if not self._step_deltas or self.on_tokens is None:
            return
        deltas, self._step_deltas = self._step_deltas, []
        deltas = [d for d in deltas if not self._by_id.get(d.seq_id, _GONE).dropped]
        if deltas:
            try:
                self.on_tokens(deltas)
            except Exception:
                log.exception("on_tokens callback failed")

    def _remove_rows(self, leaving: list[_Sequence]) -> None:
        keep = [i for i, s in enumerate(self._rows) if s not in leaving]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._kv, self._mask = [], np.zeros((0, 0), dtype=np.int64)
            return
        mask = self._mask[keep]
        first = int(np.argmax(mask.any(axis=0)))  # drop leading columns no remaining row uses
        self._mask = np.ascontiguousarray(mask[:, first:])
        self._kv = self._kv_ops.keep(self._kv, keep, first)

    def _finish(self, seq: _Sequence, reason: str, error_code: str | None = None,
                error_message: str | None = None, eos: bool = False) -> None:
        with self._cond:
            self._by_id.pop(seq.seq_id, None)
            again = self._resubmitted.pop(seq.seq_id, None) if seq.dropped else None
            if again is not None:
                self._by_id[again.seq_id] = again
                self._waiting.append(again)
                self._cond.notify_all()
        if seq.dropped:
            return
        text = self.model.decode(seq.generated)
        if reason == "stop" and not eos and seq.params.stop:
            cut = min((text.find(s) for s in seq.params.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        result = SequenceResult(
            seq.seq_id, text, list(seq.generated), reason, len(seq.prompt), len(seq.generated),
            seq.started_at or time.time(), seq.first_token_at, time.time(), error_code, error_message,
        )
        try:
            seq.on_finish(result)
        except Exception:
            log.exception("on_finish callback failed for %s", seq.seq_id)


def next_prefill_chunk(tokens: int, took: float, target: float, most: int) -> int:
    """The next chunk's size: ``tokens`` took ``took`` seconds; scale towards ``target`` seconds, within
    [MIN_PREFILL_CHUNK, most]."""
    fit = int(tokens * target / max(took, 1e-6))
    return max(MIN_PREFILL_CHUNK, min(most, fit))


class _Gone:
    dropped = False


_GONE = _Gone()


def _pad_left(a: np.ndarray, n: int) -> np.ndarray:
    if n == 0:
        return a
    return np.pad(a, ((0, 0), (0, 0), (n, 0), (0, 0)))


def _error(seq_id: str, prompt_tokens: int, now: float, code: str, message: str) -> SequenceResult:
    return SequenceResult(seq_id, "", [], "error", prompt_tokens, 0, now, None, now, code, message)
