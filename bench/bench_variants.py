"""Decode speed of several model variants in one interleaved run (issue 15).

Per round, for each variant in turn: single-stream greedy decode with plain ``LoadedModel.forward``
(the loop bench_llamacpp.py times against llama.cpp), then the worker's ``BatchScheduler`` with
1 request and with ``--concurrency`` concurrent requests (bench_inference.py's harness; EOS ignored,
``--tokens`` per request).  Variants alternate inside every round, so a busy shared machine hurts them
alike; the median over rounds is reported, with each variant's ratio to the first one and its
``16 / 1`` scheduler ratio.  Usage::

    python bench/bench_variants.py [--variants fp32,int4-fp32,int4,int8,int8-dq] [--rounds 3] [--tokens 128]
    python bench/bench_variants.py --variants fp32,fp32+int4-fp32   # a worker's one-row steps on int4-fp32
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench_inference
from _common import REPO, open_variant
from bench_llamacpp import PROMPT, ours_decode_tok_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="fp32,int4-fp32,int4,int8,int8-dq")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    model_dir = REPO / ".data" / "models"
    variants = args.variants.split(",")
    models = {}
    for v in variants:  # "fp32+int4-fp32": fp32 with one-row steps on int4-fp32 (model_single_row_variant)
        models[v] = open_variant(model_dir, v, args.threads)
    prompt = models[variants[0]].encode_chat([{"role": "user", "content": PROMPT}])
    for m in models.values():  # warm-up
        ours_decode_tok_s(m, prompt, 8)
        bench_inference.run(m, 1, 8)
    c = args.concurrency
    figures: dict[str, dict[str, list[float]]] = {v: {"raw": [], "one": [], "many": [], "one_decode": [],
                                                      "many_decode": []} for v in variants}
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for v, m in models.items():
            f = figures[v]
            f["raw"].append(ours_decode_tok_s(m, prompt, args.tokens))
            for key, concurrency in (("one", 1), ("many", c)):
                got = bench_inference.run(m, concurrency, args.tokens)
                f[key].append(got["tok_s"])
                if got["decode_tok_s"] is not None:
                    f[f"{key}_decode"].append(got["decode_tok_s"])
        print(f"round {r + 1} ({time.perf_counter() - t0:.0f} s): " + "  ".join(
            f"{v} {f['raw'][-1]:.0f}/{f['one'][-1]:.0f}/{f['many'][-1]:.0f}" for v, f in figures.items()), flush=True)

    med = {v: {k: statistics.median(x) if x else float("nan") for k, x in f.items()} for v, f in figures.items()}
    base = variants[0]
    print(f"\nmedian of {args.rounds} interleaved rounds, {args.tokens} tokens per request, threads={args.threads or 'all'}")
    print(f"| variant | single-stream decode (forward loop) | scheduler, 1 request | scheduler, {c} concurrent "
          f"| {c} ÷ 1 | single vs {base} | {c}-concurrent vs {base} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for v, f in med.items():
        print(f"| `{v}` | {f['raw']:.1f} tok/s | {f['one']:.1f} tok/s | {f['many']:.1f} tok/s | {f['many'] / f['one']:.2f}× "
              f"| {f['raw'] / med[base]['raw']:.2f}× | {f['many'] / med[base]['many']:.2f}× |")
    print(f"\nsteady decode (all sequences in the batch, prefills excluded; bench_inference.run's decode_tok_s), "
          f"median of {args.rounds}")
    print(f"| variant | 1 request | {c} concurrent | {c} ÷ 1 | {c} ÷ single-stream forward loop |")
    print("| --- | --- | --- | --- | --- |")
    for v, f in med.items():
        print(f"| `{v}` | {f['one_decode']:.1f} tok/s | {f['many_decode']:.1f} tok/s | "
              f"{f['many_decode'] / f['one_decode']:.2f}× | {f['many_decode'] / f['raw']:.2f}× |")


if __name__ == "__main__":
    main()
