"""The test backend: deterministic replies through the real batch scheduler, time per token per row."""

from __future__ import annotations

import threading

import numpy as np

import inference.simulated as simulated
from inference.engine import open_chat_model
from inference.scheduler import BatchScheduler, SequenceParams, SequenceResult
from inference.simulated import REPLY_WORDS, SimulatedChatModel, simulated_reply
from lotabots.settings import Settings

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _run(model: SimulatedChatModel, params: list[SequenceParams]) -> dict[str, SequenceResult]:
    sched = BatchScheduler(model, max_batch=4)
    results: dict[str, SequenceResult] = {}
    done = threading.Event()

    def finish(r: SequenceResult) -> None:
        results[r.seq_id] = r
        if len(results) == len(params):
            done.set()

    sched.start()
    try:
        for i, p in enumerate(params):
            sched.submit(f"s{i}", model.encode_chat(CHAT), p, finish)
        assert done.wait(30)
    finally:
        sched.stop()
    return results


def test_reply_is_the_documented_text_with_finish_reason_length() -> None:
    model = SimulatedChatModel(ms_per_token=0)
    lengths = [1, 5, len(REPLY_WORDS) + 3]
    results = _run(model, [SequenceParams(max_tokens=n) for n in lengths])
    for i, n in enumerate(lengths):
        r = results[f"s{i}"]
        assert (r.text, r.finish_reason, r.completion_tokens) == (simulated_reply(n), "length", n)
        assert r.prompt_tokens == len(model.encode_chat(CHAT))
    assert simulated_reply(len(REPLY_WORDS) + 1).endswith(f"CPU. {REPLY_WORDS[0]}")  # it cycles


def test_sampling_and_stop_strings_behave_like_a_real_model() -> None:
    model = SimulatedChatModel(ms_per_token=0)
    results = _run(model, [SequenceParams(max_tokens=6, temperature=0.9, top_p=0.8, seed=7),
                           SequenceParams(max_tokens=20, stop=("simulated",))])
    assert results["s0"].text == simulated_reply(6)
    assert (results["s1"].text, results["s1"].finish_reason) == ("This is a ", "stop")


def test_each_step_costs_time_per_token_times_rows(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    monkeypatch.setattr(simulated.time, "sleep", slept.append)
    model = SimulatedChatModel(ms_per_token=25)
    past = [(np.zeros((3, 1, 4, 1), np.float32),) * 2]
    logits, present = model.forward(np.full((3, 1), 1001), np.ones((3, 5)), np.full((3, 1), 4), past)
    assert slept == [0.025 * 3]
    assert logits.shape == (3, simulated.VOCAB_SIZE)
    assert present[0][0].shape == (3, 1, 5, 1)  # the KV cache grows by the step's tokens


def test_settings_select_the_simulated_backend() -> None:
    model = open_chat_model(Settings(inference_backend="simulated", simulated_ms_per_token=3))
    assert isinstance(model, SimulatedChatModel)
    assert model.seconds_per_token == 0.003
    assert Settings().inference_backend == "onnx"  # the real model stays the default


def test_a_handed_back_sequence_submitted_again_runs_once_to_the_end() -> None:
    # a worker that keeps a partition across a rebalance drops its run and re-reads the same request
    model = SimulatedChatModel(ms_per_token=2)
    sched = BatchScheduler(model, max_batch=4)
    finished: list[SequenceResult] = []
    done = threading.Event()

    def finish(r: SequenceResult) -> None:
        finished.append(r)
        done.set()

    started = threading.Event()
    sched.start()
    try:
        prompt = model.encode_chat(CHAT)
        sched.submit("req", prompt, SequenceParams(max_tokens=40), finish, on_start=lambda *_: started.set())
        assert started.wait(10)
        sched.drop("req")
        sched.submit("req", prompt, SequenceParams(max_tokens=40), finish)
        assert done.wait(30), "the resubmitted sequence never ran"
        sched.submit("other", prompt, SequenceParams(max_tokens=1), lambda r: None)  # let the engine go round
    finally:
        sched.stop()
    assert [(r.text, r.finish_reason) for r in finished] == [(simulated_reply(40), "length")]
