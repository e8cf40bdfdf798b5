"""GPU figures: the fp16 model on ONNX Runtime's CUDA EP with IO binding vs transformers' eager generate.

One run, same GPU, same model (SmolLM2-135M-Instruct from the same GGUF), same batch:

* parity: greedy output of the fp16 variant on CUDA vs tests/fixtures/smollm2_greedy.json, one
  sequence at a time and all five left-padded in one batch (tokens equal, or the first step that differs
  and the reference's top-1/top-2 logit gap there);
* engine decode: ``--batch`` sequences prefilled as one left-padded batch, then ``--tokens`` greedy
  decode steps with the KV cache kept on the device (``forward_greedy``: only token ids come back;
  ``forward``: float32 logits to the host + numpy argmax, what the scheduler does today);
* scheduler: the worker's BatchScheduler at ``--batch`` concurrent requests (EOS ignored);
* transformers: ``AutoModelForCausalLM.from_pretrained(gguf_file=...)`` in float16,
  ``attn_implementation="eager"``, ``generate`` greedy with the same left-padded batch, forced to the
  same length (``min_new_tokens``). Decode rate = (tokens - 1) per row over (t(tokens) - t(1)).

Prints the figures and writes them as JSON to ``--out``.  Usage (the device script runs it):
python bench/bench_gpu.py --gguf-dir DIR --model-dir DIR [--batch 64] [--tokens 128] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a Kafka consumer group shares partitions.",
    "Give me three tips for writing clear emails.",
    "Describe the water cycle for a ten-year-old.",
]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
figures: dict[str, Any] = {}


def section(name: str):  # type: ignore[no-untyped-def]
    """Run one part; a failure is recorded and the next part still runs."""

    def wrap(fn):  # type: ignore[no-untyped-def]
        def run(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                return fn(*a, **k)
            except Exception as exc:
                traceback.print_exc()
                figures.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                return None
            finally:
                print(f"   ({time.perf_counter() - t0:.1f}s)", flush=True)

        return run

    return wrap


def batch_prompts(model: Any, batch: int) -> list[list[int]]:
    return [model.encode_chat([{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" (#{i})"}])
            for i in range(batch)]


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b, width = len(prompts), max(len(p) for p in prompts)
    ids = np.full((b, width), pad_id, np.int64)
    mask = np.zeros((b, width), np.int64)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = p
        mask[r, width - len(p):] = 1
    return ids, mask, np.clip(np.cumsum(mask, axis=1) - 1, 0, None)


@section("build")
def build(model_dir: Path, gguf_dir: Path, variant: str) -> None:
    from inference.model_build import build_model

    source = model_dir / "_source"
    source.mkdir(parents=True, exist_ok=True)
    if not (source / GGUF_NAME).exists():
        shutil.copy(gguf_dir / GGUF_NAME, source / GGUF_NAME)
    t0 = time.perf_counter()
    build_model(model_dir, variant)
    figures[f"build_{variant}_s"] = round(time.perf_counter() - t0, 1)


@section("load")
def load(model_dir: Path, variant: str, device: str) -> Any:
    import onnxruntime as ort

    from inference.gpu_runner import load_device_model

    figures["onnxruntime"] = ort.__version__
    figures["ort_providers_available"] = ort.get_available_providers()
    t0 = time.perf_counter()
    model = load_device_model(model_dir, variant, device=device)
    figures["session_providers"] = model.providers
    figures["load_s"] = round(time.perf_counter() - t0, 1)
    return model


def greedy_one(model: Any, prompt: list[int], max_new: int) -> list[int]:
    n = len(prompt)
    ids, past = model.forward_greedy(np.array([prompt]), np.ones((1, n), np.int64), np.arange(n)[None], model.empty_past(1))
    out: list[int] = []
    while True:
        nxt = int(ids[0])
        out.append(nxt)
        if nxt in model.eos_token_ids or len(out) >= max_new:
            return out
        total = n + len(out)
        ids, past = model.forward_greedy(np.array([[nxt]]), np.ones((1, total), np.int64), np.array([[total - 1]]), past)


def greedy_batch(model: Any, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    ids, mask, pos = left_pad(prompts, model.pad_token_id)
    step, past = model.forward_greedy(ids, mask, pos, model.empty_past(len(prompts)))
    outs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    next_pos = pos[:, -1] + 1
    for _ in range(max_new):
        for r in range(len(prompts)):
            if not done[r]:
                outs[r].append(int(step[r]))
                done[r] = int(step[r]) in model.eos_token_ids or len(outs[r]) >= max_new
        if all(done):
            break
        mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], axis=1)
        step, past = model.forward_greedy(step[:, None].astype(np.int64), mask, next_pos[:, None], past)
        next_pos = next_pos + 1
    return outs


def compare(out: list[int], case: dict) -> dict:
    exp = case["output_ids"]
    if out == exp:
        return {"equal": True, "tokens": len(exp)}
    first = next((i for i, (a, b) in enumerate(zip(out, exp, strict=False)) if a != b), min(len(out), len(exp)))
    gaps = case["top1_top2_logit_gap_per_step"]
    return {"equal": False, "first_diff": first, "of": len(exp),
            "ref_gap_there": gaps[first] if first < len(gaps) else None}


@section("parity")
def parity(model: Any, reference: dict) -> None:
    singles = [compare(greedy_one(model, c["input_ids"], 48), c) for c in reference["cases"]]
    batched = greedy_batch(model, [c["input_ids"] for c in reference["cases"]], 48)
    figures["parity_single"] = singles
    figures["parity_batch"] = [compare(o, c) for o, c in zip(batched, reference["cases"], strict=True)]
    for label in ("parity_single", "parity_batch"):
        eq = sum(1 for r in figures[label] if r["equal"])
        print(f"   {label}: {eq}/{len(figures[label])} prompts equal to the reference: {figures[label]}")


@section("engine decode")
def engine_decode(model: Any, batch: int, tokens: int) -> None:
    prompts = batch_prompts(model, batch)
    for greedy_on_device in (True, False):
        for _rep in range(2):  # the first pass warms up kernels and the allocator
            ids, mask, pos = left_pad(prompts, model.pad_token_id)
            t0 = time.perf_counter()
            if greedy_on_device:
                step, past = model.forward_greedy(ids, mask, pos, model.empty_past(batch))
            else:
                logits, past = model.forward(ids, mask, pos, model.empty_past(batch))
                step = logits.argmax(axis=-1)
            t_prefill = time.perf_counter() - t0
            next_pos = pos[:, -1] + 1
            t1 = time.perf_counter()
            for _ in range(tokens - 1):
                mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
                if greedy_on_device:
                    step, past = model.forward_greedy(step[:, None].astype(np.int64), mask, next_pos[:, None], past)
                else:
                    logits, past = model.forward(step[:, None].astype(np.int64), mask, next_pos[:, None], past)
                    step = logits.argmax(axis=-1)
                next_pos = next_pos + 1
            dt = time.perf_counter() - t1
        key = "engine_greedy_on_device" if greedy_on_device else "engine_logits_to_host"
        figures[key] = {"batch": batch, "tokens": tokens, "prefill_ms": round(t_prefill * 1000, 1),
                        "decode_step_ms": round(dt / (tokens - 1) * 1000, 2),
                        "decode_tok_s": round(batch * (tokens - 1) / dt, 0)}
        print(f"   {key}: {figures[key]}")
    # one sequence alone: per-token latency of the same engine
    ids, mask, pos = left_pad(prompts[:1], model.pad_token_id)
    step, past = model.forward_greedy(ids, mask, pos, model.empty_past(1))
    next_pos, t = pos[:, -1] + 1, time.perf_counter()
    for _ in range(63):
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        step, past = model.forward_greedy(step[:, None].astype(np.int64), mask, next_pos[:, None], past)
        next_pos = next_pos + 1
    figures["engine_single_stream_tok_s"] = round(63 / (time.perf_counter() - t), 0)
    print(f"   single stream: {figures['engine_single_stream_tok_s']} tok/s")
    steps = [64, 256, 512]
    # step time against context length (the cache grows by a column a step): a long decode at batch 64
    ids, mask, pos = left_pad(prompts, model.pad_token_id)
    step, past = model.forward_greedy(ids, mask, pos, model.empty_past(batch))
    next_pos, done, timeline = pos[:, -1] + 1, 1, {}
    t = time.perf_counter()
    while done < steps[-1]:
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        step, past = model.forward_greedy(step[:, None].astype(np.int64), mask, next_pos[:, None], past)
        next_pos, done = next_pos + 1, done + 1
        if done in steps:
            timeline[done] = round(batch * done / (time.perf_counter() - t), 0)
    figures["engine_decode_tok_s_by_length"] = timeline
    print(f"   aggregate decode tok/s after N tokens per row: {timeline}")


def timed_run(sched: Any, prompts: list[list[int]], tokens: int) -> tuple[dict, list[Any]]:
    """All ``prompts`` at once through ``sched`` (EOS ignored): wall time, tok/s, decode tok/s once every
    sequence has joined, and the results."""
    from inference.scheduler import SequenceParams

    sched.start()
    results: list[Any] = []
    done = threading.Event()

    def finish(r: Any) -> None:
        results.append(r)
        if len(results) == len(prompts):
            done.set()

    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        sched.submit(str(i), p, SequenceParams(max_tokens=tokens, ignore_eos=True), finish)
    done.wait(600)
    wall = time.perf_counter() - t0
    sched.stop()
    last_first = max(r.first_token_at or r.finished_at for r in results)
    end = max(r.finished_at for r in results)
    decode_tokens = sum(max(r.completion_tokens - 1, 0) for r in results)
    errors = sorted({r.error_message for r in results if r.finish_reason == "error"})
    return {"batch": len(prompts), "tokens": tokens, "wall_s": round(wall, 2),
            "tok_s_incl_prefill": round(sum(r.completion_tokens for r in results) / wall, 0),
            "decode_tok_s_after_all_joined": round(decode_tokens / (end - last_first), 0) if end > last_first else 0,
            "errors": errors[:3]}, results


@section("scheduler")
def scheduler_run(model: Any, batch: int, tokens: int) -> None:
    from inference.scheduler import BatchScheduler

    prompts = batch_prompts(model, batch)
    for _rep in range(2):  # the second run counts (warm)
        figures["scheduler"], _ = timed_run(BatchScheduler(model, max_batch=batch), prompts, tokens)
    print(f"   {figures['scheduler']}")


def _slot_run(model: Any, prompts: list[list[int]], tokens: int, graphs: bool) -> tuple[dict, list[Any]]:
    from inference.kv_slots import SlotScheduler

    sched = SlotScheduler(model, kv_capacity=max(len(p) for p in prompts) + tokens + 1, max_batch=len(prompts),
                          graphs=graphs)
    run, results = timed_run(sched, prompts, tokens)
    return {**run, "graphs": graphs}, results


@section("fixed KV slots, with and without CUDA graphs")
def slots_run(model_dir: Path, variant: str, device: str, batch: int, tokens: int, reference: dict) -> None:
    """The ``-slots`` variant through the SlotScheduler: parity with the reference, then decode tok/s with
    the decode step captured as a CUDA graph and without (two sessions of the same model)."""
    from inference.engine import prepare
    from inference.model_build import build_model
    from inference.model_files import load_model

    name = f"{variant}-slots"
    build_model(model_dir, name)
    prompts = batch_prompts(prepare(load_model(model_dir, name, device="cpu")), batch)
    out: dict[str, Any] = {}
    for graphs in (False, True, False, True):  # alternate: the second of each pair counts (warm)
        model = prepare(load_model(model_dir, name, device=device, cuda_graphs=graphs))
        cases = reference["cases"]
        _, got = _slot_run(model, [c["input_ids"] for c in cases], 48, graphs)
        by_id = {r.seq_id: r.token_ids for r in got}
        parity_ok = sum(by_id[str(i)] == [t for t in c["output_ids"] if t not in model.eos_token_ids]
                        for i, c in enumerate(cases))
        run, _ = _slot_run(model, prompts, tokens, graphs)
        run["parity"] = f"{parity_ok}/{len(cases)}"
        run["session_providers"] = model.providers
        out["graphs" if graphs else "no_graphs"] = run
        print(f"   {run}", flush=True)
        del model
    figures["slots"] = out
    a = out.get("graphs", {}).get("decode_tok_s_after_all_joined")
    b = out.get("no_graphs", {}).get("decode_tok_s_after_all_joined")
    if a and b:
        figures["ratio_slots_graphs_vs_no_graphs"] = round(a / b, 2)
        print(f"RATIO slots decode with CUDA graphs {a:.0f} tok/s vs without {b:.0f} tok/s = {a / b:.2f}x")


@section("transformers eager generate")
def transformers_baseline(gguf_dir: Path, batch: int, tokens: int, reference: dict) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    figures["torch"], figures["transformers"] = torch.__version__, transformers.__version__
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=GGUF_NAME)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_dir), gguf_file=GGUF_NAME, dtype=torch.float16, attn_implementation="eager"
    ).to("cuda").eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" (#{i})"}],
                                     add_generation_prompt=True, tokenize=False) for i in range(batch)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")

    def gen(n: int) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        torch.cuda.synchronize()
        assert out.shape[1] == enc["input_ids"].shape[1] + n
        return time.perf_counter() - t0

    gen(8)  # warm-up
    t1 = min(gen(1) for _ in range(3))
    tn = min(gen(tokens) for _ in range(2))
    figures["hf_eager"] = {"batch": batch, "tokens": tokens, "t_1_s": round(t1, 3), "t_n_s": round(tn, 3),
                           "decode_tok_s": round(batch * (tokens - 1) / (tn - t1), 0),
                           "tok_s_incl_prefill": round(batch * tokens / tn, 0)}
    print(f"   {figures['hf_eager']}")
    # the same model's greedy output in float16 on this GPU vs the float32 reference (context for parity)
    agree = []
    for case in reference["cases"]:
        with torch.no_grad():
            out = model.generate(torch.tensor([case["input_ids"]], device="cuda"), max_new_tokens=48,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        agree.append(compare(out[0, len(case["input_ids"]):].tolist(), case))
    figures["hf_fp16_parity"] = agree
    print(f"   transformers fp16 vs reference: {agree}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf-dir", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--variant", default="fp16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-slots", action="store_true", help="skip the fixed-KV-slots run (CUDA graphs on/off)")
    ap.add_argument("--out", type=Path, default=Path("gpu_figures.json"))
    args = ap.parse_args()
    reference = json.loads((REPO / "tests" / "fixtures" / "smollm2_greedy.json").read_text())
    if not args.skip_hf:  # torch first: its CUDA libraries are then already loaded for onnxruntime
        try:
            import torch

            figures["gpu"] = torch.cuda.get_device_name(0)
        except Exception as exc:
            figures["gpu"] = f"unknown ({exc})"
    build(args.model_dir, args.gguf_dir, args.variant)
    model = load(args.model_dir, args.variant, args.device)
    if model is not None:
        parity(model, reference)
        engine_decode(model, args.batch, args.tokens)
        scheduler_run(model, args.batch, args.tokens)
        args.out.write_text(json.dumps(figures, indent=1))
        del model
    if not args.skip_slots:
        slots_run(args.model_dir, args.variant, args.device, args.batch, args.tokens, reference)
        args.out.write_text(json.dumps(figures, indent=1))
    if not args.skip_hf:
        transformers_baseline(args.gguf_dir, args.batch, args.tokens, reference)
    ours = figures.get("engine_greedy_on_device", {}).get("decode_tok_s")
    hf = figures.get("hf_eager", {}).get("decode_tok_s")
    if ours and hf:
        figures["ratio_engine_vs_hf_eager"] = round(ours / hf, 2)
        print(f"RATIO engine decode {ours:.0f} tok/s vs transformers eager {hf:.0f} tok/s = {ours / hf:.2f}x")
    args.out.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
