"""CPU figures of the inference engine against llama.cpp on the same GGUF and thread count.

1. Single-stream greedy decode tokens/s: each ONNX variant (``--variants``) vs llama.cpp
   (llama-cpp-python) on the very GGUF the variants are built from, same prompt tokens, same
   ``--threads``, EOS ignored. Both loops do the same work per token: one model call, then an argmax
   over the logits in numpy. Rounds alternate engines (``--rounds``) and the best round of each is kept,
   so a busy shared machine hurts both alike.
2. Aggregate tokens/s at ``--concurrency`` concurrent requests through the worker's BatchScheduler
   vs single-stream, and time to first token at that concurrency vs 1 (p50/p99), for the first variant.

llama-cpp-python is a benchmark-only dependency (a source package; a CPU build):
    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python
Usage: python bench/bench_llamacpp.py [--threads 2] [--tokens 128] [--variants int4,fp32,fp32+int4-fp32]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import REPO, open_variant

PROMPT = "Explain what a Kafka consumer group is in two sentences."


def ours_decode_tok_s(model, prompt: list[int], tokens: int) -> float:  # type: ignore[no-untyped-def]
    from inference.kv_slots import HostSlots, is_slot_model

    n = len(prompt)
    if is_slot_model(model):  # a `-slots` variant: the cache is a fixed buffer written in place
        slots = HostSlots(model, 1, n + tokens + 1)
        logits = slots.forward(0, np.array([prompt]), np.arange(n)[None], np.array([0]))
        tok = int(np.argmax(logits[0]))
        t0 = time.perf_counter()
        for i in range(tokens):
            logits = slots.forward(0, np.array([[tok]]), np.array([[n + i]]), np.array([n + i]))
            tok = int(np.argmax(logits[0]))
        return tokens / (time.perf_counter() - t0)
    logits, past = model.forward(np.array([prompt]), np.ones((1, n), np.int64), np.arange(n)[None], model.empty_past(1))
    tok = int(np.argmax(logits[0]))
    t0 = time.perf_counter()
    for i in range(tokens):
        total = n + i + 1
        logits, past = model.forward(np.array([[tok]]), np.ones((1, total), np.int64), np.array([[total - 1]]), past)
        tok = int(np.argmax(logits[0]))
    return tokens / (time.perf_counter() - t0)


def llama_decode_tok_s(llm, prompt: list[int], tokens: int) -> float:  # type: ignore[no-untyped-def]
    llm.reset()
    llm.eval(prompt)
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t0 = time.perf_counter()
    for _ in range(tokens):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="int4,fp32")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-llama", action="store_true")
    args = ap.parse_args()

    from inference.model_build import fetch_gguf

    model_dir = REPO / ".data" / "models"
    variants = args.variants.split(",")
    models = {}
    for v in variants:  # a name, or "fp32+int4-fp32" (one-row steps on the second; model_single_row_variant)
        models[v] = open_variant(model_dir, v, args.threads)
    prompt = models[variants[0]].encode_chat([{"role": "user", "content": PROMPT}])
    llm = None
    if not args.skip_llama:
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(fetch_gguf(model_dir)), n_threads=args.threads, n_threads_batch=args.threads,
                              n_ctx=1024, n_batch=512, logits_all=False, verbose=False)
        print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}): {llama_cpp.llama_print_system_info().decode().strip()}")
    best: dict[str, float] = {}
    for m in models.values():
        ours_decode_tok_s(m, prompt, 8)  # warm-up
    if llm is not None:
        llama_decode_tok_s(llm, prompt, 8)
    for r in range(args.rounds):
        for v, m in models.items():
            best[v] = max(best.get(v, 0.0), ours_decode_tok_s(m, prompt, args.tokens))
        if llm is not None:
            best["llama.cpp"] = max(best.get("llama.cpp", 0.0), llama_decode_tok_s(llm, prompt, args.tokens))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v:.1f}" for k, v in best.items()), flush=True)
    print(f"\nsingle-stream greedy decode, {args.tokens} tokens, {args.threads} threads (best of {args.rounds}):")
    for k, v in best.items():
        ratio = f"  {v / best['llama.cpp']:.2f}x llama.cpp" if "llama.cpp" in best and k != "llama.cpp" else ""
        print(f"  {k:10s} {v:7.1f} tok/s{ratio}")
    del llm

    import bench_inference

    model = models[variants[0]]
    bench_inference.run(model, 1, 8)  # warm-up
    one = bench_inference.run(model, 1, args.tokens)
    many = bench_inference.run(model, args.concurrency, args.tokens)
    c = args.concurrency
    print(f"\n{variants[0]} through the BatchScheduler, {args.tokens} tokens per request, {args.threads} threads:")
    print(f"  aggregate tok/s: 1 request {one['tok_s']:.1f}, {c} concurrent {many['tok_s']:.1f}"
          f"  ({many['tok_s'] / one['tok_s']:.2f}x single-stream)")
    print(f"  TTFT ms: 1 request p50 {one['ttft_p50_ms']:.0f} p99 {one['ttft_p99_ms']:.0f}; {c} concurrent"
          f" p50 {many['ttft_p50_ms']:.0f} p99 {many['ttft_p99_ms']:.0f}"
          f"  ({many['ttft_p50_ms'] / one['ttft_p50_ms']:.1f}x / {many['ttft_p99_ms'] / one['ttft_p99_ms']:.1f}x)")
    print(f"  per-sequence decode at {c}: {many['per_seq_decode_tok_s']:.1f} tok/s")
    if one["decode_tok_s"] and many["decode_tok_s"]:
        print(f"  steady decode (every sequence in the batch, prefills excluded): 1 request "
              f"{one['decode_tok_s']:.1f}, {c} concurrent {many['decode_tok_s']:.1f} tok/s "
              f"({many['decode_tok_s'] / one['decode_tok_s']:.2f}x)")


if __name__ == "__main__":
    main()
