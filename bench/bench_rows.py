"""Forward-call time by rows per call for two variants, and this machine's float32 MatMul roofline.

Why workers run one-row steps on ``int4-fp32`` (``model_single_row_variant``, bench/README.md, "One-row
steps"): MLAS's 4-bit kernel wins on one row and loses to fp32's GEMM from two rows on.

1. For each shape (decode steps of 1–16 rows at ``--past`` cached columns, prompts of 16–256 tokens),
   the two variants' ``LoadedModel.forward`` alternate twice; the best of ``--reps`` calls counts.
2. ``--roofline``: one float32 MatMul through ONNX Runtime on a 453 MB weight (beyond any cache, like
   fp32's 540 MB per step) at 1 and 16 rows gives the memory bandwidth a decode step can use, and a
   cache-resident 576×3072 weight at 16–512 rows gives the GEMM peak, at 1 and 2 threads.

Usage: .venv/bin/python bench/bench_rows.py [--variants fp32,int4-fp32] [--threads 0] [--roofline]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import REPO, open_variant

SHAPES = [(1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (1, 16), (1, 64), (1, 256)]


def best_call(model, batch: int, seq: int, past_len: int, reps: int) -> float:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    shape = (batch, model.num_kv_heads, past_len, model.head_dim)
    past = [(rng.random(shape, np.float32), rng.random(shape, np.float32)) for _ in range(model.num_layers)]
    ids = np.full((batch, seq), 42)
    mask = np.ones((batch, past_len + seq), np.int64)
    pos = np.tile(np.arange(past_len, past_len + seq), (batch, 1))
    model.forward(ids, mask, pos, past)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model.forward(ids, mask, pos, past)
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_session(k: int, n: int, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32) * 0.01
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])],
        [numpy_helper.from_array(w, "w")],
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def best_run(session, x: np.ndarray, reps: int) -> float:  # type: ignore[no-untyped-def]
    session.run(None, {"x": x})
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - t0)
    return min(times)


def roofline() -> None:
    for threads in (1, 2):
        k, n = 576, 196_608
        s = matmul_session(k, n, threads)
        for m in (1, 16):
            t = best_run(s, np.ones((m, k), np.float32), 15)
            print(f"threads {threads}  {m:3d} rows x [576 x {n}] (453 MB): {t * 1e3:6.1f} ms = "
                  f"{k * n * 4 / t / 1e9:5.1f} GB/s, {2 * m * k * n / t / 1e9:6.1f} GFLOP/s", flush=True)
        del s
        s = matmul_session(576, 3072, threads)
        for m in (16, 64, 512):
            t = best_run(s, np.ones((m, 576), np.float32), 50)
            print(f"threads {threads}  {m:3d} rows x [576 x 3072] (7 MB, cache-hot): {t * 1e6:7.0f} us = "
                  f"{2 * m * 576 * 3072 / t / 1e9:6.1f} GFLOP/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="fp32,int4-fp32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--past", type=int, default=100)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--roofline", action="store_true")
    args = ap.parse_args()

    a, b = args.variants.split(",")
    models = {v: open_variant(REPO / ".data" / "models", v, args.threads) for v in (a, b)}
    print(f"| rows | {a} | {b} | {a} / {b} |\n| --- | --- | --- | --- |")
    for batch, seq in SHAPES:
        best: dict[str, float] = {}
        for v in (a, b, a, b):
            t = best_call(models[v], batch, seq, args.past, args.reps)
            best[v] = min(best.get(v, t), t)
        label = f"{batch} x 1" if seq == 1 else f"prompt of {seq}"
        print(f"| {label} | {best[a] * 1e3:.1f} ms | {best[b] * 1e3:.1f} ms | {best[a] / best[b]:.2f} |", flush=True)
    if args.roofline:
        roofline()


if __name__ == "__main__":
    main()
