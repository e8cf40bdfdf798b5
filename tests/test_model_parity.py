"""The built ONNX model, tokenizer and chat template against the transformers reference (fixtures/).

Uses the session fixtures ``model_dir`` (build once, cached) and ``reference`` from conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2.sandbox
import numpy as np
import pytest

from inference.chat import SMOLLM2_CHAT_TEMPLATE, render_chat
from inference.model_build import build_model, variant_dir
from inference.model_files import LoadedModel, load_model

MAX_NEW_TOKENS = 48


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir, variant="fp32", threads=0, device="cpu")


def greedy(model: LoadedModel, prompt_ids: list[int]) -> list[int]:
    """Greedy decode of one prompt with the KV cache, stopping at EOS like the reference."""
    n = len(prompt_ids)
    logits, past = model.forward(
        np.array([prompt_ids]), np.ones((1, n), np.int64), np.arange(n)[None, :], model.empty_past(1)
    )
    out: list[int] = []
    while True:
        nxt = int(np.argmax(logits[0]))
        out.append(nxt)
        if nxt in model.eos_token_ids or len(out) >= MAX_NEW_TOKENS:
            return out
        total = n + len(out)
        logits, past = model.forward(
            np.array([[nxt]]), np.ones((1, total), np.int64), np.array([[total - 1]]), past
        )


def greedy_batch(model: LoadedModel, prompts: list[list[int]]) -> list[list[int]]:
    """All prompts left-padded into one batch and decoded together, one step for every row."""
    b, width = len(prompts), max(len(p) for p in prompts)
    ids = np.full((b, width), model.pad_token_id, np.int64)
    mask = np.zeros((b, width), np.int64)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = p
        mask[r, width - len(p) :] = 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    logits, past = model.forward(ids, mask, positions, model.empty_past(b))
    outs: list[list[int]] = [[] for _ in prompts]
    done = [False] * b
    next_pos = positions[:, -1] + 1
    for _ in range(MAX_NEW_TOKENS):
        step = np.argmax(logits, axis=-1)
        for r in range(b):
            if not done[r]:
                outs[r].append(int(step[r]))
                done[r] = int(step[r]) in model.eos_token_ids or len(outs[r]) >= MAX_NEW_TOKENS
        if all(done):
            break
        mask = np.concatenate([mask, np.ones((b, 1), np.int64)], axis=1)
        logits, past = model.forward(step[:, None].astype(np.int64), mask, next_pos[:, None], past)
        next_pos = next_pos + 1
    return outs


def test_tokenizer_matches_reference(model: LoadedModel, reference: dict) -> None:
    for case in reference["cases"]:
        assert model.encode(case["chat_text"]) == case["input_ids"]
        assert model.encode_chat([{"role": "user", "content": case["prompt"]}]) == case["input_ids"]
        assert model.decode(case["output_ids"]) == case["output_text"]
    assert sorted(model.eos_token_ids) == sorted(reference["eos_token_ids"])


def test_tokenizer_splits_digits_like_smollm2(model: LoadedModel) -> None:
    # llama.cpp's "smollm" pre-tokenizer (and SmolLM2's tokenizer.json) put every digit in its own token
    ids = model.encode("In 2024 there were 365 days")
    pieces = [model.tokenizer.id_to_token(i) for i in ids]
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["2", "0", "2", "4", "3", "6", "5"]
    assert model.decode(ids) == "In 2024 there were 365 days"


def test_chat_rendering_equals_stored_jinja_template(model: LoadedModel, reference: dict) -> None:
    stored = model.config["chat_template"]
    assert stored == SMOLLM2_CHAT_TEMPLATE
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(stored)
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And  times 3?\n\nExplain."},
        ],
        [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": ""}],
        [{"role": "system", "content": ""}],
        [],
    ]
    for messages in conversations:
        for add_generation_prompt in (True, False):
            expected = template.render(messages=messages, add_generation_prompt=add_generation_prompt)
            assert render_chat(messages, add_generation_prompt) == expected
    for case in reference["cases"]:
        assert render_chat([{"role": "user", "content": case["prompt"]}]) == case["chat_text"]
    with pytest.raises(ValueError):
        render_chat([{"role": "user"}])


def test_greedy_generation_matches_reference(model: LoadedModel, reference: dict) -> None:
    for case in reference["cases"]:
        assert greedy(model, case["input_ids"]) == case["output_ids"], case["prompt"]


def test_left_padded_batch_matches_reference(model: LoadedModel, reference: dict) -> None:
    cases = reference["cases"]
    outs = greedy_batch(model, [c["input_ids"] for c in cases])
    for case, out in zip(cases, outs, strict=True):
        assert out == case["output_ids"], case["prompt"]


def test_padded_rows_give_same_logits_and_no_nan(model: LoadedModel, reference: dict) -> None:
    ids = reference["cases"][0]["input_ids"]
    n, pad = len(ids), 7
    alone, _ = model.forward(
        np.array([ids]), np.ones((1, n), np.int64), np.arange(n)[None], model.empty_past(1)
    )
    padded_ids = np.array([[model.pad_token_id] * pad + ids])
    mask = np.array([[0] * pad + [1] * n])
    pos = np.array([[0] * pad + list(range(n))])
    padded, present = model.forward(padded_ids, mask, pos, model.empty_past(1))
    assert np.all(np.isfinite(padded))
    assert all(np.all(np.isfinite(k)) and np.all(np.isfinite(v)) for k, v in present)
    np.testing.assert_allclose(padded, alone, atol=1e-3, rtol=1e-4)
    assert present[0][0].shape == (1, model.num_kv_heads, n + pad, model.head_dim)
    assert padded.shape == (1, model.vocab_size)


def test_build_is_idempotent(model_dir: Path) -> None:
    out = variant_dir(model_dir, "fp32")
    before = (out / "model.onnx").stat().st_mtime_ns
    messages: list[str] = []
    assert build_model(model_dir, "fp32", progress=messages.append) == out
    assert messages == []
    assert (out / "model.onnx").stat().st_mtime_ns == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["source_sha256"] == json.loads((out / "model_config.json").read_text())["source"]["sha256"]
    )
