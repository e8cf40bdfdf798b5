"""Fixed KV slots (inference.kv_slots; issue 15, "GPU readiness"), on the CPU execution provider.

A ``-slots`` model keeps the batch's KV cache in one buffer per layer that GroupQueryAttention updates
in place; the scheduler moves a prompt from the staging slot into the batch once and compacts the
batch when a row leaves. Checked here with the real model: greedy output through the slot scheduler
equals the transformers reference (5 prompts through 3 slots, so rows join, leave from the middle and
are compacted), the slot buffers are the ones every step writes (no new cache is ever returned), the
prefix cache gives the same answers as no cache, and the device implementation (CUDA on a GPU) runs
the same way on the CPU EP. Whether CUDA graphs capture the step is for bench/gpu_device_run.sh.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from inference.engine import open_scheduler, prepare
from inference.kv_slots import DeviceSlots, HostSlots, SlotScheduler, is_slot_model
from inference.model_build import build_model
from inference.model_files import LoadedModel, load_model
from inference.prefix_cache import PrefixCache
from inference.scheduler import BatchScheduler, SequenceParams, SequenceResult
from lotabots.settings import Settings
from tests.test_model_parity import MAX_NEW_TOKENS


@pytest.fixture(scope="module")
def slots_model(model_dir: Path) -> LoadedModel:
    build_model(model_dir, "fp32-slots")
    return prepare(load_model(model_dir, variant="fp32-slots", threads=0, device="cpu"))


def run(sched: BatchScheduler, prompts: list[list[int]], max_tokens: int = MAX_NEW_TOKENS,
        one_at_a_time: bool = False) -> dict[str, SequenceResult]:
    """Submit ``prompts`` (all at once, or each after the previous one finished) and wait for every result."""
    results: dict[str, SequenceResult] = {}
    done = threading.Condition()

    def finish(result: SequenceResult) -> None:
        with done:
            results[result.seq_id] = result
            done.notify_all()

    sched.start()
    try:
        for i, prompt in enumerate(prompts):
            sched.submit(str(i), prompt, SequenceParams(max_tokens=max_tokens), finish)
            if one_at_a_time:
                with done:
                    assert done.wait_for(lambda want=i + 1: len(results) == want, 300)
        with done:
            assert done.wait_for(lambda: len(results) == len(prompts), 600)
    finally:
        sched.stop()
    return results


def expected(model: LoadedModel, case: dict) -> list[int]:
    return [t for t in case["output_ids"] if t not in model.eos_token_ids]


def test_slots_graph_takes_row_lengths_and_a_fixed_buffer(slots_model: LoadedModel, model_dir: Path) -> None:
    graph = onnx.load(str(slots_model.path / "model.onnx"), load_external_data=False).graph
    names = [i.name for i in graph.input]
    assert "attention_mask" not in names and {"seqlens_k", "total_sequence_length"} <= set(names)
    past = next(i for i in graph.input if i.name == "past_key_values.0.key")
    present = next(o for o in graph.output if o.name == "present.0.key")
    dims = [d.dim_param or d.dim_value for d in past.type.tensor_type.shape.dim]
    assert dims[2] == "capacity" and present.type.tensor_type.shape == past.type.tensor_type.shape
    assert sum(n.op_type == "GroupQueryAttention" for n in graph.node) == slots_model.num_layers
    assert is_slot_model(slots_model) and slots_model.config["kv_layout"] == "slots"
    assert not is_slot_model(load_model(model_dir, variant="fp32", device="cpu"))


def test_slot_scheduler_matches_reference_while_rows_join_and_leave(slots_model: LoadedModel, reference: dict) -> None:
    sched = SlotScheduler(slots_model, kv_capacity=256, max_batch=3, prefill_chunk=16)
    buffers = [(k.ctypes.data, v.ctypes.data) for k, v in sched.slots.buffers]
    results = run(sched, [case["input_ids"] for case in reference["cases"]])
    for i, case in enumerate(reference["cases"]):
        assert results[str(i)].token_ids == expected(slots_model, case), case["prompt"]
    # every step wrote into the same buffers: nothing was reallocated, and the slots hold real columns
    assert [(k.ctypes.data, v.ctypes.data) for k, v in sched.slots.buffers] == buffers
    assert sched.slots.buffers[0][0].shape == (4, slots_model.num_kv_heads, 256, slots_model.head_dim)
    assert np.abs(sched.slots.buffers[0][0][:3, :, :8]).sum() > 0


def test_a_step_on_slots_equals_the_padded_cache_and_leaves_other_slots_alone(
    slots_model: LoadedModel, model_dir: Path, reference: dict
) -> None:
    padded = load_model(model_dir, variant="fp32", device="cpu")
    slots = HostSlots(slots_model, slots=2, capacity=64)
    prompt = reference["cases"][1]["input_ids"]
    n = len(prompt)
    logits = slots.forward(slots.staging, np.array([prompt]), np.arange(n)[None, :], np.array([0]))
    ref_logits, ref_past = padded.forward(np.array([prompt]), np.ones((1, n), np.int64), np.arange(n)[None, :],
                                          padded.empty_past(1))
    np.testing.assert_allclose(logits, ref_logits, atol=2e-3)
    slots.move(slots.staging, 1, n)
    token = int(np.argmax(logits[0]))
    before = [k[0].copy() for k, _ in slots.buffers]
    step = slots.forward(1, np.array([[token]]), np.array([[n]]), np.array([n]))
    ref_step, ref_past = padded.forward(np.array([[token]]), np.ones((1, n + 1), np.int64), np.array([[n]]), ref_past)
    np.testing.assert_allclose(step, ref_step, atol=2e-3)
    for layer, (k, _v) in enumerate(slots.buffers):
        np.testing.assert_array_equal(k[0], before[layer])  # slot 0 untouched
        np.testing.assert_allclose(k[1, :, :n + 1], ref_past[layer][0][0], atol=1e-4)  # the new column in place
        assert not k[1, :, n + 1:].any()
    np.testing.assert_allclose(slots.read(1, n + 1)[3][1], ref_past[3][1], atol=1e-4)


def test_prefix_cache_on_slots_gives_the_same_answers(slots_model: LoadedModel) -> None:
    system = [{"role": "system", "content": "You are a careful assistant. Answer in one sentence."}]
    turns = ["What is Kafka?", "And a consumer group?", "Why partitions?"]
    prompts = [slots_model.encode_chat(system + [{"role": "user", "content": t}]) for t in turns]

    def answers(cache: PrefixCache | None) -> list[list[int]]:
        sched = SlotScheduler(slots_model, kv_capacity=256, max_batch=2, prefix_cache=cache)
        # one at a time, so each later prompt can hit the earlier ones' prefix
        results = run(sched, prompts, 16, one_at_a_time=True)
        return [results[str(i)].token_ids for i in range(len(prompts))]

    cache = PrefixCache(64 << 20, block=8)
    assert answers(cache) == answers(None)
    assert cache.stats.hits >= 2 and cache.stats.tokens_reused >= 2 * 8


@pytest.mark.parametrize("graphs", [False, True], ids=["per-step-binding", "fixed-graph-inputs"])
def test_device_slots_on_the_cpu_ep_match_reference(slots_model: LoadedModel, reference: dict, graphs: bool) -> None:
    """The CUDA implementation (buffers as OrtValues, copies by a one-node graph on the device), run on the
    CPU EP: the same results. ``graphs``: every decode step runs all slots through one binding whose input
    buffers are updated in place, as a captured CUDA graph needs (the capture itself needs onnxruntime-gpu)."""
    sched = SlotScheduler(slots_model, kv_capacity=128, max_batch=3, prefill_chunk=16, device="cpu", graphs=graphs)
    assert isinstance(sched.slots, DeviceSlots) and sched.prefix_cache is None
    results = run(sched, [case["input_ids"] for case in reference["cases"]])
    for i, case in enumerate(reference["cases"]):
        assert results[str(i)].token_ids == expected(slots_model, case), case["prompt"]
    assert (sched.slots._fixed is not None) == graphs


def test_open_scheduler_picks_slots_and_refuses_what_does_not_fit(slots_model: LoadedModel) -> None:
    sched = open_scheduler(slots_model, Settings(inference_kv_capacity=64), max_batch=2)
    assert isinstance(sched, SlotScheduler) and sched.max_context == 64
    results = run(sched, [list(range(1, 60))], max_tokens=8)
    assert results["0"].finish_reason == "error" and results["0"].error_code == "context_length_exceeded"
