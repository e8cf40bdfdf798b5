"""Raw decode speed of the built model with plain ``LoadedModel.forward`` (no scheduler).

Prints single-stream decode tok/s, batch-N aggregate decode tok/s and their ratio.  Prefill is
excluded from the decode timings.  Usage::

    python bench/bench_engine_raw.py [--variant fp32] [--threads 0] [--steps 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.model_build import build_model  # noqa: E402
from inference.model_files import LoadedModel, load_model  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a Kafka consumer group is in two sentences.",
    "Give me three tips for writing clear emails.",
    "Translate 'good morning' into Spanish.",
]


def decode_tok_s(model: LoadedModel, prompts: list[list[int]], steps: int) -> tuple[float, float]:
    """Left-pad ``prompts`` into one batch, prefill, then time ``steps`` decode steps (EOS ignored).

    Returns (aggregate decoded tokens per second, prefill seconds).
    """
    b, width = len(prompts), max(len(p) for p in prompts)
    ids = np.full((b, width), model.pad_token_id, np.int64)
    mask = np.zeros((b, width), np.int64)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = p
        mask[r, width - len(p) :] = 1
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    t0 = time.perf_counter()
    logits, past = model.forward(ids, mask, pos, model.empty_past(b))
    prefill = time.perf_counter() - t0
    nxt_pos = pos[:, -1:] + 1
    t0 = time.perf_counter()
    for _ in range(steps):
        nxt = np.argmax(logits, axis=-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((b, 1), np.int64)], axis=1)
        logits, past = model.forward(nxt, mask, nxt_pos, past)
        nxt_pos = nxt_pos + 1
    return b * steps / (time.perf_counter() - t0), prefill


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model-dir", type=Path, default=Path(os.environ.get("LOTABOTS_MODEL_DIR", ".data/models"))
    )
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    build_model(args.model_dir, args.variant)
    model = load_model(args.model_dir, args.variant, threads=args.threads, device=args.device)
    prompts = [model.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    decode_tok_s(model, prompts[:1], 8)  # warm-up
    single, single_prefill = decode_tok_s(model, prompts[:1], args.steps)
    batch_prompts = [prompts[i % len(prompts)] for i in range(args.batch)]
    batched, batch_prefill = decode_tok_s(model, batch_prompts, args.steps)
    print(
        f"model {args.variant} on {model.providers[0]}, threads={args.threads or 'default'}, {args.steps} decode steps"
    )
    print(
        f"single-stream decode: {single:8.1f} tok/s   (prefill {len(prompts[0])} tokens: {single_prefill * 1000:.0f} ms)"
    )
    print(f"batch-{args.batch} aggregate:    {batched:8.1f} tok/s   (prefill: {batch_prefill * 1000:.0f} ms)")
    print(f"ratio batch/single: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
