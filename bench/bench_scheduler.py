"""The batch scheduler's own figures (issue 15), each against a baseline measured in the same run:

- ``prefix``: time to first token of the follow-up turns of 5-turn conversations, with the prefix KV
  cache and without it (same conversations, one request at a time); also checks that the answers are
  token-for-token the same.
- ``interference``: 15 streams decoding, then a 2,000-token prompt arrives: the streams' inter-token
  gaps while it is prefilled, against their gaps with no such prompt, with the adaptive prefill chunk
  (the default) and with whole 256-token chunks (``prefill_step_ratio=0``, the former behaviour).
- ``batch``: 32 concurrent requests through ``max_batch`` 4, 8, 16, 32: aggregate tokens/s and TTFT,
  which is how the worker's ``inference_max_batch`` default was chosen.

Real model, CPU execution provider, the scheduler in this process (no Kafka: bench_streaming.py covers
the whole path). Usage:
  python bench/bench_scheduler.py [--parts prefix,interference,batch] [--variant fp32] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from _common import REPO

SYSTEM = ("You are the support assistant of a small online bookshop. Answer in plain, friendly English, "
          "keep answers short, never invent order numbers, and ask a follow-up question when the customer "
          "has not said which book they mean.")
TURNS = [
    ["I ordered a novel last week and it has not arrived yet. What can I do?",
     "It was a paperback copy of a mystery novel, sent to Lyon in France.",
     "Can you tell me how long shipping to France usually takes?",
     "What happens if the parcel is lost on the way?",
     "Thanks. Please summarise what I should do next."],
    ["Do you sell second-hand books as well as new ones?",
     "How do you grade the condition of a used book?",
     "Can I sell you some of my old books?",
     "Which genres do you buy the most?",
     "Great, how do I send them to you?"],
    ["I want a present for my niece, she is twelve and loves dragons.",
     "She has already read the most famous series. Anything less known?",
     "Is there an illustrated edition of your first suggestion?",
     "Can you gift-wrap it and add a card?",
     "How much would all of that cost in total, roughly?"],
]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def run_one(sched, seq_id: str, prompt: list[int], params):  # type: ignore[no-untyped-def]
    done = threading.Event()
    out = {}

    def finish(r) -> None:  # type: ignore[no-untyped-def]
        out["r"] = r
        done.set()

    submitted = time.time()
    sched.submit(seq_id, prompt, params, finish)
    done.wait()
    r = out["r"]
    return r, (r.first_token_at - submitted) * 1000


def part_prefix(model, args) -> None:  # type: ignore[no-untyped-def]
    from inference.prefix_cache import PrefixCache
    from inference.scheduler import BatchScheduler, SequenceParams

    params = SequenceParams(max_tokens=args.reply_tokens)
    runs: dict[str, dict[str, object]] = {}
    for label, cache in (("without cache", None), ("with cache", PrefixCache(256 << 20))):
        sched = BatchScheduler(model, prefix_cache=cache)
        sched.start()
        follow_ups: list[float] = []
        firsts: list[float] = []
        answers: list[list[int]] = []
        prompt_lengths: list[int] = []
        for c in range(args.conversations):
            turns = TURNS[c % len(TURNS)]
            messages = [{"role": "system", "content": SYSTEM}]
            for t, question in enumerate(turns):
                messages.append({"role": "user", "content": question if c < len(TURNS) else f"{question} ({c})"})
                prompt = model.encode_chat(messages)
                result, ttft = run_one(sched, f"{label}-{c}-{t}", prompt, params)
                (follow_ups if t else firsts).append(ttft)
                answers.append(result.token_ids)
                prompt_lengths.append(len(prompt))
                messages.append({"role": "assistant", "content": result.text})
        sched.stop()
        runs[label] = {"follow_ups": follow_ups, "firsts": firsts, "answers": answers, "stats": cache and cache.stats,
                       "lengths": prompt_lengths}
    base, cached = runs["without cache"], runs["with cache"]
    lengths = base["lengths"]
    print(f"prefix cache: {args.conversations} conversations x 5 turns, replies up to {args.reply_tokens} tokens, "
          f"prompts {min(lengths)}-{max(lengths)} tokens (5th turn p50 {statistics.median(lengths[4::5]):.0f})")
    for label in ("without cache", "with cache"):
        f = runs[label]["follow_ups"]
        print(f"  follow-up TTFT {label:14s} p50 {percentile(f, .5):7.1f} ms  p99 {percentile(f, .99):7.1f} ms  "
              f"(first turns p50 {percentile(runs[label]['firsts'], .5):.1f} ms)")
    ratio = percentile(base["follow_ups"], .5) / percentile(cached["follow_ups"], .5)
    print(f"  p50 without / with = {ratio:.2f}x  (goal >= 3x); answers identical: "
          f"{base['answers'] == cached['answers']}; cache {cached['stats']}")


def part_interference(model, args) -> None:  # type: ignore[no-untyped-def]
    from inference.scheduler import BatchScheduler, SequenceParams

    filler = model.encode(" ".join(TURNS[i % 3][i % 5] for i in range(400)))
    long_prompt = (filler * (1 + args.long_prompt // max(len(filler), 1)))[:args.long_prompt]

    def one(ratio: float | None, with_long: bool) -> tuple[list[float], float]:
        stamps: dict[str, list[float]] = {}

        def on_tokens(deltas) -> None:  # type: ignore[no-untyped-def]
            now = time.perf_counter()
            for d in deltas:
                stamps.setdefault(d.seq_id, []).append(now)

        kw = {} if ratio is None else {"prefill_step_ratio": ratio}
        sched = BatchScheduler(model, max_batch=16, on_tokens=on_tokens, **kw)
        sched.start()
        for i in range(args.streams):
            prompt = model.encode_chat([{"role": "user", "content": TURNS[i % 3][i % 5] + f" (#{i})"}])
            sched.submit(f"s{i}", prompt, SequenceParams(max_tokens=args.stream_tokens, ignore_eos=True),
                         lambda r: None)
        while len(stamps) < args.streams or min(len(v) for v in stamps.values()) < 8:  # all decoding
            time.sleep(0.01)
        window_start = time.perf_counter()
        long_ttft = float("nan")
        if with_long:
            result, long_ttft = run_one(sched, "long", long_prompt, SequenceParams(max_tokens=1))
        else:
            time.sleep(args.baseline_s)
        window_end = time.perf_counter()
        for i in range(args.streams):
            sched.cancel(f"s{i}")
        sched.stop()
        gaps = [(b - a) * 1000 for v in stamps.values() for a, b in zip(v, v[1:], strict=False)
                if a >= window_start and b <= window_end]
        return gaps, long_ttft

    base, _ = one(None, with_long=False)
    adaptive, ttft_adaptive = one(None, with_long=True)
    whole, ttft_whole = one(0.0, with_long=True)
    print(f"interference: {args.streams} streams decoding, a {len(long_prompt)}-token prompt arrives")
    print(f"  streams' gap, no long prompt         p50 {percentile(base, .5):7.1f} ms  p99 {percentile(base, .99):7.1f} ms"
          f"  ({len(base)} gaps)")
    for label, gaps, ttft in (("adaptive chunk (default)", adaptive, ttft_adaptive),
                              ("whole 256-token chunks", whole, ttft_whole)):
        print(f"  streams' gap, {label:24s} p50 {percentile(gaps, .5):7.1f} ms  p99 {percentile(gaps, .99):7.1f} ms  "
              f"p99 ratio {percentile(gaps, .99) / percentile(base, .99):5.2f}x  (p50 ratio "
              f"{percentile(gaps, .5) / percentile(base, .5):4.2f}x)  long prompt TTFT {ttft:7.0f} ms  "
              f"({len(gaps)} gaps)")
    print("  goal: p99 ratio <= 2x")


def part_batch(model, args) -> None:  # type: ignore[no-untyped-def]
    from inference.scheduler import BatchScheduler, SequenceParams

    print(f"max_batch: {args.requests} concurrent requests x {args.batch_tokens} tokens")
    for max_batch in (4, 8, 16, 32):
        sched = BatchScheduler(model, max_batch=max_batch, prefill_step_ratio=args.prefill_step_ratio)
        sched.start()
        done = threading.Event()
        results: list = []

        def finish(r, results=results, done=done) -> None:  # type: ignore[no-untyped-def]
            results.append(r)
            if len(results) == args.requests:
                done.set()

        submitted = time.time()
        for i in range(args.requests):
            prompt = model.encode_chat([{"role": "user", "content": TURNS[i % 3][i % 5] + f" (#{i})"}])
            sched.submit(str(i), prompt, SequenceParams(max_tokens=args.batch_tokens, ignore_eos=True), finish)
        done.wait()
        wall = time.time() - submitted
        sched.stop()
        ttft = [(r.first_token_at - submitted) * 1000 for r in results]
        total = [(r.finished_at - submitted) * 1000 for r in results]
        print(f"  max_batch {max_batch:2d}: {sum(r.completion_tokens for r in results) / wall:7.1f} tok/s  "
              f"TTFT p50 {percentile(ttft, .5):7.0f} ms p99 {percentile(ttft, .99):7.0f} ms  "
              f"request time p50 {percentile(total, .5):7.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="prefix,interference,batch")
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--reply-tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, default=15)
    ap.add_argument("--stream-tokens", type=int, default=1500)
    ap.add_argument("--long-prompt", type=int, default=2000)
    ap.add_argument("--baseline-s", type=float, default=5.0)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--batch-tokens", type=int, default=64)
    ap.add_argument("--prefill-step-ratio", type=float, default=0.75, help="the batch part's scheduler setting")
    args = ap.parse_args()

    from inference.model_files import load_model

    model = load_model(REPO / ".data" / "models", variant=args.variant, threads=args.threads, device="cpu")
    print(f"variant {args.variant}, threads {args.threads or 'all'}")
    parts = args.parts.split(",")
    if "prefix" in parts:
        part_prefix(model, args)
    if "interference" in parts:
        part_interference(model, args)
    if "batch" in parts:
        part_batch(model, args)


if __name__ == "__main__":
    main()
