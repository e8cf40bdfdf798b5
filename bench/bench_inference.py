"""Inference: single-stream decode tokens/s and aggregate tokens/s at 4 and 16 concurrent requests.

Runs the worker's own BatchScheduler on the real model (CPU EP), every sequence generating exactly
`--tokens` tokens (EOS ignored, so all configurations do equal work). Also prints time to first token.
Usage: python bench/bench_inference.py [--tokens 128] [--threads 0] [--variant fp32]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from _common import REPO

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a Kafka consumer group shares partitions.",
    "Give me three tips for writing clear emails.",
    "Describe the water cycle for a ten-year-old.",
]


class _StepClock:
    """The model as the scheduler sees it, noting when each decode call (one new token per row) starts and
    how many rows it has. Everything else is the model's own."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self._model = model
        self.decode_starts: list[tuple[float, int]] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._model, name)

    def forward(self, input_ids, attention_mask, position_ids, past):  # type: ignore[no-untyped-def]
        rows, seq = input_ids.shape
        if seq == 1:
            self.decode_starts.append((time.perf_counter(), rows))
        return self._model.forward(input_ids, attention_mask, position_ids, past)

    def steady_decode_tok_s(self, rows: int) -> float | None:
        """Tokens/s over the longest run of consecutive decode calls with ``rows`` rows and nothing in
        between but the scheduler's own work (sampling, streaming): the batch's decode rate with every
        sequence in it, prefills excluded. ``None`` with fewer than 3 such calls."""
        best = (0, 0.0, 0.0)  # calls, first start, last start
        calls, first = 0, 0.0
        for at, n in self.decode_starts:
            calls, first = (calls + 1, first if calls else at) if n == rows else (0, 0.0)
            if calls > best[0]:
                best = (calls, first, at)
        calls, first, last = best
        return rows * (calls - 1) / (last - first) if calls >= 3 else None


def run(model, concurrency: int, tokens: int, prefill_step_ratio: float | None = None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Aggregate ``tok_s``: every generated token over the wall time from the first submit to the last
    result (prefills included). ``decode_tok_s``: the steady decode rate with all ``concurrency`` sequences
    in the batch (:meth:`_StepClock.steady_decode_tok_s`; ``None`` for a ``-slots`` variant, whose
    scheduler calls its session directly)."""
    from inference.kv_slots import SlotScheduler, is_slot_model
    from inference.scheduler import BatchScheduler, SequenceParams

    kw = {} if prefill_step_ratio is None else {"prefill_step_ratio": prefill_step_ratio}
    if is_slot_model(model):  # a `-slots` variant: fixed KV slots, sized for these prompts
        sched = SlotScheduler(model, kv_capacity=tokens + 128, max_batch=max(concurrency, 1), **kw)
        clock = None
    else:
        model = clock = _StepClock(model)
        sched = BatchScheduler(model, max_batch=max(concurrency, 1), **kw)
    sched.start()
    done = threading.Event()
    results = []
    submitted: dict[str, float] = {}

    def finish(r) -> None:  # type: ignore[no-untyped-def]
        results.append(r)
        if len(results) == concurrency:
            done.set()

    t0 = time.perf_counter()
    for i in range(concurrency):
        prompt = model.encode_chat([{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" (#{i})"}])
        submitted[str(i)] = time.time()
        sched.submit(str(i), prompt, SequenceParams(max_tokens=tokens, ignore_eos=True), finish)
    done.wait()
    wall = time.perf_counter() - t0
    sched.stop()
    generated = sum(r.completion_tokens for r in results)
    ttft = sorted((r.first_token_at - submitted[r.seq_id]) * 1000 for r in results)
    decode_s = [r.finished_at - r.first_token_at for r in results]
    return {
        "tok_s": generated / wall,
        "decode_tok_s": clock.steady_decode_tok_s(concurrency) if clock is not None else None,
        "per_seq_decode_tok_s": statistics.mean((r.completion_tokens - 1) / d for r, d in zip(results, decode_s, strict=True)),
        "ttft_p50_ms": ttft[len(ttft) // 2],
        "ttft_p99_ms": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--prefill-step-ratio", type=float, default=None,
                    help="the scheduler's prefill_step_ratio (default: the scheduler's own; 0 = whole chunks)")
    args = ap.parse_args()
    from inference.engine import prepare
    from inference.model_build import build_model
    from inference.model_files import load_model

    build_model(REPO / ".data" / "models", variant=args.variant)
    model = prepare(load_model(REPO / ".data" / "models", variant=args.variant, threads=args.threads))
    run(model, 1, 8)  # warm-up
    base = None
    for c in (int(x) for x in args.concurrency.split(",")):
        r = run(model, c, args.tokens, args.prefill_step_ratio)
        base = base or r["tok_s"]
        print(f"{args.variant} concurrency {c:3d}: {r['tok_s']:7.1f} tok/s aggregate  ({r['tok_s'] / base:4.2f}x single)"
              f"  per-sequence decode {r['per_seq_decode_tok_s']:6.1f} tok/s  TTFT p50 {r['ttft_p50_ms']:6.0f} ms"
              f" p99 {r['ttft_p99_ms']:6.0f} ms"
              + (f"  steady decode {r['decode_tok_s']:7.1f} tok/s" if r["decode_tok_s"] else ""))


if __name__ == "__main__":
    main()
