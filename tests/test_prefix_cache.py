"""The prefix KV cache (inference.prefix_cache) and the scheduler's prefill slicing.

Pure logic on small arrays first; then the real model: greedy outputs with the cache equal the
transformers reference and equal a run without the cache, on the reference prompts and on multi-turn
conversations, and follow-up turns really start after the cached prefix.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from inference.model_files import LoadedModel, load_model
from inference.prefix_cache import PREFIX_CACHE_METRICS, PrefixCache
from inference.scheduler import (
    MIN_PREFILL_CHUNK,
    BatchScheduler,
    SequenceParams,
    SequenceResult,
    next_prefill_chunk,
)
from inference.simulated import SimulatedChatModel


def kv(tokens: int, layers: int = 2, fill: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    a = np.full((1, 1, tokens, 2), fill, np.float32)
    return [(a, a.copy()) for _ in range(layers)]


# ---- the cache itself ------------------------------------------------------------------------------

def test_longest_block_aligned_prefix_is_found_and_one_token_is_always_left() -> None:
    cache = PrefixCache(1 << 20, block=4)
    cache.insert(list(range(10)), kv(10, fill=1.0))
    hit = cache.lookup(list(range(10)) + [99, 98])
    assert hit is not None and hit.tokens == 8  # blocks of 4: 8 of the 10 cached tokens are block-aligned
    assert hit.past[0][0].shape == (1, 1, 8, 2) and hit.past[0][0].flags.c_contiguous
    same = cache.lookup(list(range(8)))  # the whole prompt is cached: its last token must still be computed
    assert same is not None and same.tokens == 4
    assert cache.lookup([0, 1, 2, 7, 4, 5]) is None  # first block differs
    assert cache.lookup([0, 1, 2]) is None  # shorter than a block
    assert (cache.stats.lookups, cache.stats.hits, cache.stats.tokens_reused) == (4, 2, 12)


def test_a_hash_collision_never_serves_another_prompts_cache() -> None:
    cache = PrefixCache(1 << 20, block=4)
    cache.insert([1, 2, 3, 4, 5], kv(5))
    other = [9, 9, 9, 9, 9]
    (entry_id,) = cache._entries
    cache._index[cache._chain(other, 4)[0]] = entry_id  # forge a colliding index entry
    assert cache.lookup(other) is None


def test_memory_bound_evicts_least_recently_used() -> None:
    one = sum(k.nbytes + v.nbytes for k, v in kv(8))
    cache = PrefixCache(2 * one, block=4)
    a, b, c = [1] * 8, [2] * 8, [3] * 8
    cache.insert(a, kv(8))
    cache.insert(b, kv(8))
    assert cache.lookup(a + [0]) is not None  # a is now the most recently used
    cache.insert(c, kv(8))
    assert cache.stats.evictions == 1 and cache.stats.bytes == 2 * one and cache.stats.entries == 2
    assert cache.lookup(b + [0]) is None
    assert cache.lookup(a + [0]) is not None and cache.lookup(c + [0]) is not None
    cache.insert([4] * 40, kv(40))  # larger than the whole bound: not kept, nothing evicted for it
    assert cache.stats.entries == 2 and cache.lookup([4] * 41) is None


def test_an_entry_extended_by_a_later_turn_is_replaced_by_it() -> None:
    cache = PrefixCache(1 << 20, block=4)
    turn1 = list(range(12))
    cache.insert(turn1, kv(12))
    cache.insert(turn1 + [50, 51, 52, 53, 54], kv(17))
    assert cache.stats.entries == 1
    hit = cache.lookup(turn1 + [50, 51, 52, 53, 54, 60])
    assert hit is not None and hit.tokens == 16
    cache.insert(turn1 + [50, 51, 52, 53, 54], kv(17))  # the same again: kept once
    assert cache.stats.entries == 1 and cache.stats.inserts == 2


def test_a_cache_of_zero_bytes_is_off() -> None:
    cache = PrefixCache(0)
    cache.insert(list(range(64)), kv(64))
    assert not cache.enabled and cache.lookup(list(range(65))) is None and cache.stats.lookups == 0
    with pytest.raises(ValueError):
        PrefixCache(1 << 20).insert(list(range(20)), kv(19))  # columns must match the tokens


def test_metrics_report_hits_per_tier() -> None:
    cache = PrefixCache(1 << 20, block=4)
    PREFIX_CACHE_METRICS.watch("test-prefix-tier", cache)
    cache.insert(list(range(8)), kv(8))
    cache.lookup(list(range(9)))
    text = generate_latest().decode()
    assert 'lotabots_prefix_cache_hits_total{tier="test-prefix-tier"} 1.0' in text
    assert 'lotabots_prefix_cache_tokens_reused_total{tier="test-prefix-tier"} 8.0' in text
    assert f'lotabots_prefix_cache_bytes{{tier="test-prefix-tier"}} {float(cache.stats.bytes)}' in text


# ---- prefill slicing ---------------------------------------------------------------------------------

def test_next_prefill_chunk_scales_towards_the_target_within_bounds() -> None:
    assert next_prefill_chunk(32, took=0.080, target=0.040, most=256) == 16
    assert next_prefill_chunk(16, took=0.010, target=0.040, most=256) == 64
    assert next_prefill_chunk(200, took=0.010, target=0.040, most=256) == 256
    assert next_prefill_chunk(8, took=1.0, target=0.010, most=256) == MIN_PREFILL_CHUNK


class _Recording(SimulatedChatModel):
    """The simulated test model, recording each call's (rows, input tokens)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.calls: list[tuple[int, int]] = []

    def forward(self, input_ids, attention_mask, position_ids, past):  # type: ignore[no-untyped-def]
        self.calls.append(input_ids.shape)
        return super().forward(input_ids, attention_mask, position_ids, past)


def _wait_all(sched: BatchScheduler, jobs: list[tuple[str, list[int], SequenceParams]]) -> dict[str, SequenceResult]:
    results: dict[str, SequenceResult] = {}
    done = threading.Event()

    def finish(r: SequenceResult) -> None:
        results[r.seq_id] = r
        if len(results) == len(jobs):
            done.set()

    for seq_id, prompt, params in jobs:
        sched.submit(seq_id, prompt, params, finish)
    assert done.wait(120)
    return results


class _FixedSlices(BatchScheduler):
    """The scheduler with its slice size pinned (the real one adapts it from measured times)."""

    def _adapt_chunk(self, tokens: int, took: float) -> None:
        pass


def test_a_long_prompt_is_prefilled_in_slices_between_decode_steps_and_a_short_one_whole() -> None:
    model = _Recording()
    model.seconds_per_token = 0.001
    sched = _FixedSlices(model, max_batch=8, prefill_chunk=256, prefill_whole_tokens=48)
    sched._chunk_while_decoding = 24
    sched.start()
    try:
        decoding = threading.Event()
        sched.on_tokens = lambda deltas: decoding.set()
        sched.submit("stream", [5] * 10, SequenceParams(max_tokens=3000, ignore_eos=True), lambda r: None)
        assert decoding.wait(30)
        results = _wait_all(sched, [("long", [7] * 300, SequenceParams(max_tokens=1)),
                                    ("short", [8] * 40, SequenceParams(max_tokens=1))])
        sched.cancel("stream")
    finally:
        sched.stop()
    assert results["long"].finish_reason == "length" and results["short"].finish_reason == "length"
    single = [n for rows, n in model.calls if rows == 1 and n > 1]  # prefill calls of one prompt
    assert single[0] == 10  # the stream, alone: whole
    assert 40 in single  # the short prompt while the stream decodes: one call
    long_chunks = [n for n in single[1:] if n != 40]
    assert long_chunks == [24] * 11 + [36]  # sliced while the stream decodes; a rest of <= 48 goes whole
    # between two slices of the long prompt the stream advanced: a decode step of the batch ran
    shapes = model.calls
    slices = [i for i, (rows, n) in enumerate(shapes) if rows == 1 and n == 24]
    assert all(any(shapes[j] == (1, 1) for j in range(a + 1, b)) for a, b in zip(slices, slices[1:], strict=False))


# ---- the real model -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fp32(model_dir: Path) -> LoadedModel:
    return load_model(model_dir, variant="fp32", threads=0, device="cpu")


def _one(sched: BatchScheduler, seq_id: str, prompt: list[int], max_tokens: int) -> SequenceResult:
    return _wait_all(sched, [(seq_id, prompt, SequenceParams(max_tokens=max_tokens))])[seq_id]


def test_reference_prompts_with_a_warm_cache_give_the_reference_text(fp32: LoadedModel, reference: dict) -> None:
    cache = PrefixCache(64 << 20)
    sched = BatchScheduler(fp32, prefix_cache=cache)
    sched.start()
    try:
        for rounds in range(2):  # the second round finds each prompt's own prefill and answer cached
            for i, case in enumerate(reference["cases"]):
                result = _one(sched, f"{rounds}-{i}", case["input_ids"], 48)
                expected = [t for t in case["output_ids"] if t not in fp32.eos_token_ids]
                assert result.token_ids == expected, (rounds, case["prompt"])
    finally:
        sched.stop()
    assert cache.stats.hits >= len(reference["cases"])
    shortest = min(len(c["input_ids"]) for c in reference["cases"])
    assert cache.stats.tokens_reused >= len(reference["cases"]) * (shortest - 1) // cache.block * cache.block


def test_multi_turn_conversations_are_identical_with_and_without_the_cache(fp32: LoadedModel) -> None:
    questions = ["Name a planet of the solar system.", "How far is it from the sun?",
                 "Is it bigger than the Earth?", "Tell me one more fact about it."]

    def converse(cache: PrefixCache | None) -> tuple[list[list[int]], list[int]]:
        sched = BatchScheduler(fp32, prefix_cache=cache)
        sched.start()
        answers, lengths = [], []
        try:
            for c, system in enumerate(("You are a concise astronomy tutor.", "You answer like a pirate.")):
                messages = [{"role": "system", "content": system}]
                for t, q in enumerate(questions):
                    messages.append({"role": "user", "content": q})
                    prompt = fp32.encode_chat(messages)
                    result = _one(sched, f"{c}-{t}", prompt, 32)
                    answers.append(result.token_ids)
                    lengths.append(len(prompt))
                    messages.append({"role": "assistant", "content": result.text})
        finally:
            sched.stop()
        return answers, lengths

    plain, _ = converse(None)
    cache = PrefixCache(64 << 20)
    cached, lengths = converse(cache)
    assert cached == plain
    # every follow-up turn reused at least the previous turn's prompt (its answer re-tokenises the same)
    follow_ups = [lengths[i - 1] for i in range(len(lengths)) if i % len(questions)]
    assert cache.stats.tokens_reused >= sum(n // cache.block * cache.block for n in follow_ups)
