"""TEST BACKEND: a chat model that spends a configured time per token and no CPU.

:class:`SimulatedChatModel` stands in for the ONNX model when ``LOTABOTS_INFERENCE_BACKEND=simulated``.
It exists so that scaling (more workers → more throughput) can be shown and tested on a small machine,
where the real model is CPU-bound and several workers would only share the same cores. It is not a
language model: it ignores the prompt's meaning and always writes the same reply.

How it behaves:

* Each ``forward`` call sleeps ``ms_per_token × rows`` in the calling (engine) thread. A decode step of a
  batch of ``B`` sequences therefore costs ``B`` token-times, so one worker's throughput is bounded at
  ``1000 / ms_per_token`` tokens/s whatever its batch size, like a saturated accelerator. Sleeping
  releases the GIL, so the process uses next to no CPU.
* The KV cache is real in shape (the scheduler concatenates, pads and slices it) but tiny: one layer,
  one head, head_dim 1.
* The reply is deterministic: generated token ``k`` (0-based) is word ``k mod len(REPLY_WORDS)`` of
  :data:`REPLY_WORDS`, so ``max_tokens=n`` gives :func:`simulated_reply(n) <simulated_reply>` with
  finish reason ``length`` (the model never emits EOS). Greedy and sampled decoding agree, because the
  logits put all the probability on one token.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from inference.chat import render_chat

REPLY_WORDS: tuple[str, ...] = tuple(
    "This is a simulated reply from the LotaBots test backend; it costs time but no CPU.".split()
)
EOS_TOKEN_ID = 0
PROMPT_VOCAB = 1000  # prompt words hash into [2, PROMPT_VOCAB); generated tokens live above it
_REPLY_BASE = PROMPT_VOCAB
VOCAB_SIZE = _REPLY_BASE + len(REPLY_WORDS)
_LOW = np.float32(-1e4)  # finite: a temperature-scaled softmax of -inf would give NaN


def simulated_reply(max_tokens: int) -> str:
    """The text the test backend writes for a request with ``max_tokens`` (finish reason ``length``)."""
    return " ".join(REPLY_WORDS[k % len(REPLY_WORDS)] for k in range(max_tokens))


class SimulatedChatModel:
    """Test backend with the scheduler's ``DecoderModel`` interface plus the worker's ``encode_chat``.

    ``ms_per_token`` is the time one token of one sequence takes; ``max_context`` bounds prompt +
    ``max_tokens`` as a real model's context would.
    """

    num_layers = 1
    num_kv_heads = 1
    head_dim = 1
    backend = "simulated"

    def __init__(self, ms_per_token: float, max_context: int = 8192) -> None:
        if ms_per_token < 0:
            raise ValueError("ms_per_token must be >= 0")
        self.seconds_per_token = ms_per_token / 1000.0
        self.max_context = max_context
        self.eos_token_ids: frozenset[int] = frozenset({EOS_TOKEN_ID})
        self.vocab_size = VOCAB_SIZE
        self.forward_calls = 0

    # ---- what the worker calls ------------------------------------------------------------------
    def encode_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """One token per whitespace-separated word of the ChatML prompt (the real template's text)."""
        text = render_chat(messages, add_generation_prompt)
        return [2 + zlib.crc32(word.encode()) % (PROMPT_VOCAB - 2) for word in text.split()]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        words = [REPLY_WORDS[i - _REPLY_BASE] for i in ids if _REPLY_BASE <= i < VOCAB_SIZE]
        return " ".join(words)

    # ---- what the batch scheduler calls ---------------------------------------------------------
    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
        past: list[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        rows, steps = input_ids.shape
        if len(past) != self.num_layers:
            raise ValueError(f"past has {len(past)} layers, model has {self.num_layers}")
        self.forward_calls += 1
        if self.seconds_per_token:
            time.sleep(self.seconds_per_token * rows)  # the "accelerator" is busy; the CPU is not
        last = np.asarray(input_ids[:, -1], dtype=np.int64)
        after_reply = _REPLY_BASE + (last - _REPLY_BASE + 1) % len(REPLY_WORDS)
        nxt = np.where(last >= _REPLY_BASE, after_reply, _REPLY_BASE)
        logits = np.full((rows, VOCAB_SIZE), _LOW, dtype=np.float32)
        logits[np.arange(rows), nxt] = 0.0
        grow = np.zeros((rows, self.num_kv_heads, steps, self.head_dim), dtype=np.float32)
        present = [(np.concatenate([k, grow], axis=2), np.concatenate([v, grow], axis=2)) for k, v in past]
        return logits, present
