"""One-row steps on a second variant (``model_single_row_variant``, inference.model_files).

A CPU worker serving ``fp32`` runs steps of exactly one row (a single stream's decode) on ``int4-fp32``:
the GGUF's own weights in float32 arithmetic, faster on one row and slower on more (bench/README.md).
Checked on the real model: which session each step shape runs on (logits equal to that variant's
own, bit for bit), that the KV cache of one variant continues on the other, and that greedy text
through the batch scheduler is the reference while sequences join and leave the batch (steps switch
between the two sessions mid-sequence).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from inference.engine import open_chat_model, serving_variants, share_pool_for_single_row
from inference.model_build import build_model
from inference.model_files import LoadedModel, load_model, single_row_applies
from inference.prefix_cache import PrefixCache
from inference.scheduler import BatchScheduler, SequenceParams, SequenceResult
from lotabots.settings import Settings


@pytest.fixture(scope="module")
def models(model_dir: Path) -> dict[str, LoadedModel]:
    build_model(model_dir, "int4-fp32")
    return {
        "hybrid": load_model(model_dir, "fp32", device="cpu", single_row_variant="int4-fp32"),
        "fp32": load_model(model_dir, "fp32", device="cpu"),
        "int4-fp32": load_model(model_dir, "int4-fp32", device="cpu"),
    }


def test_where_the_single_row_variant_applies() -> None:
    cpu = ["CPUExecutionProvider"]
    assert single_row_applies("fp32", "int4-fp32", cpu)
    assert not single_row_applies("fp32", None, cpu) and not single_row_applies("fp32", "", cpu)
    assert not single_row_applies("fp32", "fp32", cpu)
    assert not single_row_applies("fp32", "int4-fp32", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not single_row_applies("fp32-slots", "int4-fp32", cpu)
    assert not single_row_applies("int4", "int4-fp32", cpu)  # int4 is faster on one row than int4-fp32
    assert serving_variants(Settings(model_variant="int4", model_single_row_variant="int4-fp32")) == ["int4"]
    assert serving_variants(Settings(model_variant="fp32", model_single_row_variant="int4-fp32")) == ["fp32", "int4-fp32"]
    assert serving_variants(Settings(model_variant="fp32", model_single_row_variant="")) == ["fp32"]
    assert serving_variants(Settings(model_variant="fp32-slots", model_single_row_variant="int4-fp32")) == ["fp32-slots"]


def test_a_worker_with_default_settings_opens_both(model_dir: Path) -> None:
    model = open_chat_model(Settings(model_dir=model_dir, inference_device="cpu", model_variant="fp32"))
    assert model.single_row is not None and model.single_row_variant == "int4-fp32"
    off = open_chat_model(Settings(model_dir=model_dir, inference_device="cpu", model_variant="fp32",
                                   model_single_row_variant=""))
    assert off.single_row is None


def test_one_row_steps_run_on_the_single_row_session_and_the_rest_on_the_main_one(
    models: dict[str, LoadedModel], reference: dict
) -> None:
    hybrid, fp32, int4 = models["hybrid"], models["fp32"], models["int4-fp32"]
    a, b = (c["input_ids"] for c in reference["cases"][:2])
    n = len(a)
    prefill = (np.array([a]), np.ones((1, n), np.int64), np.arange(n)[None, :], fp32.empty_past(1))
    logits, past = hybrid.forward(*prefill)
    expected, _ = fp32.forward(*prefill)
    assert np.array_equal(logits, expected)  # a prompt of n rows: fp32's session
    step = (np.array([[int(np.argmax(logits[0]))]]), np.ones((1, n + 1), np.int64), np.array([[n]]), past)
    one, grown = hybrid.forward(*step)
    assert np.array_equal(one, int4.forward(*step)[0])  # one row: int4-fp32's, on fp32's KV cache
    assert not np.array_equal(one, fp32.forward(*step)[0])  # (the two really differ in the last bits)
    assert grown[0][0].shape == (1, fp32.num_kv_heads, n + 1, fp32.head_dim)
    assert int(np.argmax(one[0])) == reference["cases"][0]["output_ids"][1]

    width = max(n, len(b))  # two rows, left-padded: fp32's session again
    ids = np.array([[fp32.pad_token_id] * (width - n) + a, [fp32.pad_token_id] * (width - len(b)) + b])
    mask = (np.arange(width)[None, :] >= np.array([[width - n], [width - len(b)]])).astype(np.int64)
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    two = (ids, mask, pos, fp32.empty_past(2))
    assert np.array_equal(hybrid.forward(*two)[0], fp32.forward(*two)[0])


def test_scheduler_text_is_the_reference_while_sequences_join_and_leave(
    models: dict[str, LoadedModel], reference: dict
) -> None:
    hybrid = models["hybrid"]
    sched = BatchScheduler(hybrid, prefix_cache=PrefixCache(64 << 20))
    cases = reference["cases"]
    results: dict[str, SequenceResult] = {}
    done = threading.Event()
    expected_count = 2 * len(cases)

    def finish(r: SequenceResult) -> None:
        results[r.seq_id] = r
        if len(results) == expected_count:
            done.set()

    sched.start()
    try:
        for i, case in enumerate(cases):  # one at a time: every decode step is one row
            one = threading.Event()
            sched.submit(f"alone-{i}", case["input_ids"], SequenceParams(max_tokens=48),
                         lambda r, e=one: (finish(r), e.set()))
            assert one.wait(120)
        for i, case in enumerate(cases):  # all at once: batches shrink to one row as answers end
            sched.submit(f"together-{i}", case["input_ids"], SequenceParams(max_tokens=48), finish)
        assert done.wait(300)
    finally:
        sched.stop()
    for i, case in enumerate(cases):
        expected = [t for t in case["output_ids"] if t not in hybrid.eos_token_ids]
        assert results[f"alone-{i}"].token_ids == expected, case["prompt"]
        assert results[f"together-{i}"].token_ids == expected, case["prompt"]


def test_a_worker_process_gives_both_sessions_one_thread_pool(model_dir: Path, reference: dict) -> None:
    """The worker's start-up (lotabots.runners) shares one intra-op pool between the two sessions: with
    a pool each, the idle one spins on the same cores (bench/README.md). Run in a fresh process, because
    the pool is process-wide; the greedy text through both sessions is still the reference."""
    import json
    import subprocess
    import sys

    case = reference["cases"][0]
    script = f"""
import json, numpy as np
from inference.engine import open_chat_model, share_pool_for_single_row
from inference import model_files
from lotabots.settings import Settings
s = Settings(model_dir={str(model_dir)!r}, inference_device="cpu", model_variant="fp32")
shared = share_pool_for_single_row(s)
m = open_chat_model(s)
ids = {case["input_ids"]!r}
n = len(ids)
logits, past = m.forward(np.array([ids]), np.ones((1, n), np.int64), np.arange(n)[None, :], m.empty_past(1))
out = []
while True:
    tok = int(np.argmax(logits[0]))
    out.append(tok)
    if tok in m.eos_token_ids or len(out) >= 48:
        break
    total = n + len(out)
    logits, past = m.forward(np.array([[tok]]), np.ones((1, total), np.int64), np.array([[total - 1]]), past)
print(json.dumps({{"shared": shared, "flag": model_files._shared_pool, "paired": m.single_row is not None,
                  "per_session": model_files.session_options(1).use_per_session_threads, "out": out}}))
"""
    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["shared"] and got["flag"] and got["paired"] and got["per_session"] is False
    assert got["out"] == case["output_ids"]
    off = Settings(model_dir=model_dir, inference_device="cpu", model_variant="fp32", model_single_row_variant="")
    assert not share_pool_for_single_row(off)  # one session: nothing to share, the process is left as it is
