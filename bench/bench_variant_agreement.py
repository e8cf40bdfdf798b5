"""Accuracy of the model variants against the exact ``fp32`` variant (issue 15).

For every prompt of the reference set (tests/fixtures/smollm2_greedy.json, 5 prompts) and of the
held-out set (tests/data/heldout_prompts.json, 64 prompts written once by hand), ``fp32`` greedy-decodes
a continuation of up to ``--tokens`` tokens (stopping at EOS, like the reference).  Each variant then

* is **teacher-forced** on that continuation: at every step its argmax is compared with fp32's token
  (no error cascade); the disagreements are listed with fp32's top-1/top-2 logit gap there;
* runs **free** greedy decode of the same length: the first position where its tokens differ from
  fp32's is recorded (the distribution is printed; "same" = identical through the continuation).

Prompts run one at a time (batch 1), so a variant whose numerics depend on the batch (``int8-dq``
quantises its input per tensor) is measured the way a single stream sees it.  Prints a table and, with
``--json``, writes every figure.  Usage::

    python bench/bench_variant_agreement.py [--variants int4,int8,int8-dq] [--tokens 48] [--json out.json]
    python bench/bench_variant_agreement.py --variants int4-fp32 --no-free   # slow: 8-bit head at level 0
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
from _common import REPO

HELDOUT = REPO / "tests" / "data" / "heldout_prompts.json"
REFERENCE = REPO / "tests" / "fixtures" / "smollm2_greedy.json"


def prompt_sets(model) -> dict[str, list[list[int]]]:  # type: ignore[no-untyped-def]
    reference = [c["input_ids"] for c in json.loads(REFERENCE.read_text())["cases"]]
    heldout = [
        model.encode_chat([{"role": "user", "content": p}]) for p in json.loads(HELDOUT.read_text())["prompts"]
    ]
    return {"reference": reference, "heldout": heldout}


def _prefill(model, prompt: list[int]):  # type: ignore[no-untyped-def]
    n = len(prompt)
    return model.forward(np.array([prompt]), np.ones((1, n), np.int64), np.arange(n)[None, :], model.empty_past(1))


def _step(model, token: int, total: int, past):  # type: ignore[no-untyped-def]
    return model.forward(np.array([[token]]), np.ones((1, total), np.int64), np.array([[total - 1]]), past)


def greedy_with_gaps(model, prompt: list[int], tokens: int) -> tuple[list[int], list[float]]:  # type: ignore[no-untyped-def]
    """Greedy continuation (stops at EOS) and the top-1/top-2 logit gap at each step."""
    logits, past = _prefill(model, prompt)
    out: list[int] = []
    gaps: list[float] = []
    while True:
        row = logits[0].astype(np.float32)
        top2 = np.partition(row, -2)[-2:]
        nxt = int(np.argmax(row))
        out.append(nxt)
        gaps.append(float(top2[1] - top2[0]))
        if nxt in model.eos_token_ids or len(out) >= tokens:
            return out, gaps
        logits, past = _step(model, nxt, len(prompt) + len(out), past)


def teacher_forced(model, prompt: list[int], forced: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """The model's argmax at each step when fed ``forced`` (fp32's own tokens)."""
    logits, past = _prefill(model, prompt)
    preds = []
    for step, token in enumerate(forced):
        preds.append(int(np.argmax(logits[0])))
        if step + 1 < len(forced):
            logits, past = _step(model, token, len(prompt) + step + 1, past)
    return preds


def free_greedy(model, prompt: list[int], tokens: int) -> list[int]:  # type: ignore[no-untyped-def]
    return greedy_with_gaps(model, prompt, tokens)[0]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def bucket(pos: int | None) -> str:
    if pos is None:
        return "same"
    for hi, name in ((0, "0"), (3, "1-3"), (7, "4-7"), (15, "8-15"), (31, "16-31")):
        if pos <= hi:
            return name
    return "32+"


BUCKETS = ("0", "1-3", "4-7", "8-15", "16-31", "32+", "same")


def accuracy_level(model) -> str:  # type: ignore[no-untyped-def]
    import onnx

    graph = onnx.load(str(model.path / "model.onnx"), load_external_data=False).graph
    ops = Counter(n.op_type for n in graph.node)
    levels = sorted({a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"})
    if levels:
        return f"MatMulNBits accuracy_level {'/'.join(map(str, levels))}"
    if ops.get("DynamicQuantizeMatMul"):
        return "DynamicQuantizeMatMul (uint8 per-tensor activations)"
    return "float MatMul"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="int4,int8,int8-dq")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-free", action="store_true", help="teacher-forced agreement only (no free-run greedy)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from inference.model_build import build_model
    from inference.model_files import load_model

    model_dir = REPO / ".data" / "models"
    build_model(model_dir, "fp32")
    fp32 = load_model(model_dir, "fp32", threads=args.threads, device="cpu")
    sets = prompt_sets(fp32)
    t0 = time.perf_counter()
    truth = {name: [greedy_with_gaps(fp32, p, args.tokens) for p in prompts] for name, prompts in sets.items()}
    print(f"fp32 continuations: {sum(len(o) for v in truth.values() for o, _ in v)} tokens over "
          f"{sum(len(v) for v in sets.values())} prompts ({time.perf_counter() - t0:.0f} s)", flush=True)
    del fp32

    report: dict = {"tokens": args.tokens, "variants": {}}
    for variant in args.variants.split(","):
        build_model(model_dir, variant)
        model = load_model(model_dir, variant, threads=args.threads, device="cpu")
        t0 = time.perf_counter()
        entry: dict = {"compute": accuracy_level(model)}
        for name, prompts in sets.items():
            agree = steps = 0
            miss_gaps: list[float] = []
            divergences: list[int | None] = []
            for prompt, (out, gaps) in zip(prompts, truth[name], strict=True):
                preds = teacher_forced(model, prompt, out)
                for pred, tok, gap in zip(preds, out, gaps, strict=True):
                    steps += 1
                    agree += pred == tok
                    if pred != tok:
                        miss_gaps.append(round(gap, 3))
                if not args.no_free:
                    divergences.append(first_divergence(free_greedy(model, prompt, args.tokens), out))
            entry[name] = {
                "teacher_forced": [agree, steps],
                "agreement": agree / steps,
                "disagreement_fp32_gaps": sorted(miss_gaps),
                "first_divergence": divergences if not args.no_free else None,
                "first_divergence_buckets": dict(Counter(bucket(d) for d in divergences)) if not args.no_free else None,
            }
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["variants"][variant] = entry
        print(f"\n{variant} ({entry['compute']}), {entry['seconds']} s", flush=True)
        for name in sets:
            e = entry[name]
            a, s = e["teacher_forced"]
            gaps = e["disagreement_fp32_gaps"]
            print(f"  {name:9s} teacher-forced top-1 agreement {a}/{s} = {100 * a / s:6.2f} %"
                  f"   fp32 gap at disagreements: max {max(gaps) if gaps else 0:.3f}, median "
                  f"{float(np.median(gaps)) if gaps else 0:.3f}")
            if e["first_divergence_buckets"] is not None:
                b = e["first_divergence_buckets"]
                print(f"  {'':9s} first divergence in free greedy: " + "  ".join(f"{k}: {b.get(k, 0)}" for k in BUCKETS))
        del model
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
