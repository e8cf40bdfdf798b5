"""Load a built model for inference with only onnxruntime, tokenizers and numpy.

:class:`LoadedModel` wraps the ONNX Runtime session of one decoder step (see
:mod:`inference.onnx_graph` for the I/O contract), the tokenizer and the model config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .chat import chat_segments, render_chat
from .model_build import variant_dir  # stdlib-only at import time

KV = tuple[np.ndarray, np.ndarray]


def choose_providers(device: str = "auto") -> list[str]:
    """``auto``: CUDA EP when onnxruntime-gpu offers it, else CPU; ``cuda`` insists; ``cpu`` forces CPU."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "gpu"):
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError("device 'cuda' requested but onnxruntime has no CUDAExecutionProvider")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r} (auto, cpu, cuda)")


@dataclass
class LoadedModel:
    """A ready-to-run model: ``forward`` one decoder step, encode chats, decode ids."""

    path: Path
    config: dict[str, Any]
    tokenizer: Tokenizer
    session: ort.InferenceSession
    # steps of exactly one row (a single stream's decode) run here when set: the same weights in a
    # form that is faster for one row (load_model's ``single_row_variant``); same I/O and KV layout
    single_row: ort.InferenceSession | None = None
    single_row_variant: str | None = None
    _output_names: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.num_layers = int(self.config["num_layers"])
        self.num_kv_heads = int(self.config["num_kv_heads"])
        self.head_dim = int(self.config["head_dim"])
        self.vocab_size = int(self.config["vocab_size"])
        self.eos_token_ids: frozenset[int] = frozenset(int(t) for t in self.config["eos_token_ids"])
        self.pad_token_id = int(self.config.get("pad_token_id", min(self.eos_token_ids)))
        self.max_context = int(self.config["max_position_embeddings"])
        self.kv_dtype = np.dtype(self.config.get("kv_dtype", "float32"))
        self._output_names = ["logits"] + [
            f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")
        ]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def empty_past(self, batch: int) -> list[KV]:
        """A zero-length KV cache for ``batch`` rows (``past_seq`` = 0)."""
        shape = (batch, self.num_kv_heads, 0, self.head_dim)
        return [
            (np.zeros(shape, self.kv_dtype), np.zeros(shape, self.kv_dtype)) for _ in range(self.num_layers)
        ]

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: Sequence[KV],
    ) -> tuple[np.ndarray, list[KV]]:
        """One step: returns last-position ``logits`` [batch, vocab] and the grown KV cache."""
        feed: dict[str, np.ndarray] = {
            "input_ids": np.asarray(input_ids, dtype=np.int64),
            "attention_mask": np.asarray(attention_mask, dtype=np.int64),
            "position_ids": np.asarray(position_ids, dtype=np.int64),
        }
        if len(past) != self.num_layers:
            raise ValueError(f"past has {len(past)} layers, model has {self.num_layers}")
        for i, (k, v) in enumerate(past):
            feed[f"past_key_values.{i}.key"] = k
            feed[f"past_key_values.{i}.value"] = v
        one_row = self.single_row is not None and feed["input_ids"].shape == (1, 1)
        out = (self.single_row if one_row else self.session).run(self._output_names, feed)  # type: ignore[union-attr]
        present = [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(self.num_layers)]
        return out[0], present

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        return render_chat(messages, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in the text (``<|im_start|>``) are recognised."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Chat-template ``messages`` and tokenise the prompt.

        Template pieces are tokenised with special tokens recognised; message contents with special
        tokens as plain text, so user text cannot inject ``<|im_start|>``/``<|im_end|>`` turns. The
        pre-tokenizer splits at these boundaries anyway, so ids equal tokenising the rendered text.
        """
        ids: list[int] = []
        for text, is_template in chat_segments(messages, add_generation_prompt):
            self.tokenizer.encode_special_tokens = not is_template
            try:
                ids += self.tokenizer.encode(text, add_special_tokens=False).ids
            finally:
                self.tokenizer.encode_special_tokens = False
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


_shared_pool = False  # share_thread_pool() was called: every session of this process uses one pool


def share_thread_pool(threads: int = 0) -> None:
    """One intra-op thread pool for every ONNX Runtime session this process creates from now on.

    For a worker holding two sessions (``single_row_variant``): with a pool each, the pool of the
    session that just ran spins for tens of milliseconds while the other one computes, on the same
    cores, and the call after a switch took 1.6-1.8x as long (bench/README.md, "One-row steps").
    Process-wide and one way: call it before the first session (a worker's start-up does).
    """
    global _shared_pool
    from onnxruntime.capi import _pybind_state

    _pybind_state.set_global_thread_pool_sizes(int(threads) or os.cpu_count() or 1, 1)
    _shared_pool = True


def session_options(threads: int = 0) -> ort.SessionOptions:
    """Session options for decode: all graph optimisations, ``threads`` intra-op threads (0 = ORT default).

    Memory-pattern planning is off: every decode step has a new ``past_seq`` so a cached pattern never
    matches, and re-planning measured slower than plain allocation.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = False
    if _shared_pool:  # the pool's size was set by share_thread_pool; ``threads`` does not apply
        so.use_per_session_threads = False
        so.intra_op_num_threads = so.inter_op_num_threads = 0
    return so


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "model_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no built model at {path}; run `lotabots model build` first")
    return json.loads(config_file.read_text())


def single_row_applies(variant: str, single_row_variant: str | None, providers: Sequence[str]) -> bool:
    """Whether one-row steps of ``variant`` run on ``single_row_variant``: only for ``fp32`` (the pair that
    was measured: ``int4``, say, is faster on one row than ``int4-fp32``), only on the CPU EP (the GPU
    path binds its own buffers and was not measured), and with the padded KV layout (a ``-slots``
    model keeps its KV in fixed buffers)."""
    return (
        variant == "fp32" and bool(single_row_variant) and single_row_variant != variant
        and not str(single_row_variant).endswith("-slots") and list(providers) == ["CPUExecutionProvider"]
    )


def load_model(model_dir: Path, variant: str = "fp32", threads: int = 0, device: str = "auto",
               cuda_graphs: bool = False, single_row_variant: str | None = None) -> LoadedModel:
    """Load ``<model_dir>/smollm2-135m-instruct/<variant>/`` (as written by ``build_model``).

    ``cuda_graphs``: a ``-slots`` variant on the CUDA EP may capture its decode step (inference.kv_slots).
    ``single_row_variant``: a second variant (built beside it) whose session runs the steps of exactly one
    row, where :func:`single_row_applies` (``model_single_row_variant``; bench/README.md)."""
    path = variant_dir(Path(model_dir), variant)
    config = _read_config(path)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    providers = choose_providers(device)
    session = ort.InferenceSession(
        str(path / "model.onnx"), sess_options=session_options(threads), providers=[
            ("CUDAExecutionProvider", {"enable_cuda_graph": "1"})
            if name == "CUDAExecutionProvider" and cuda_graphs and config.get("kv_layout") == "slots" else name
            for name in providers]
    )
    model = LoadedModel(path=path, config=config, tokenizer=tokenizer, session=session)
    if single_row_applies(variant, single_row_variant, providers):
        other = variant_dir(Path(model_dir), str(single_row_variant))
        other_config = _read_config(other)
        for key in ("num_layers", "num_kv_heads", "head_dim", "vocab_size", "kv_dtype", "kv_layout", "eos_token_ids"):
            if other_config.get(key) != config.get(key):
                raise ValueError(f"single-row variant {single_row_variant!r} differs from {variant!r} in {key}")
        model.single_row = ort.InferenceSession(
            str(other / "model.onnx"), sess_options=session_options(threads), providers=providers)
        model.single_row_variant = single_row_variant
    return model
