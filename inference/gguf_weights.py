"""Read a llama-architecture GGUF: hyperparameters and float32 weights in Hugging Face layout.

llama.cpp's ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj``/``k_proj`` so that its RoPE can
rotate adjacent pairs (GPT-J style).  Hugging Face's Llama rotates halves (``rotate_half``), and
transformers' GGUF loader undoes the permutation on load; :func:`reverse_permute` does the same here,
so the weights (and the KV cache) are laid out exactly as in the reference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LlamaHParams:
    """Model hyperparameters, read from the GGUF ``llama.*`` metadata."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool


@dataclass
class LayerWeights:
    """One decoder layer; projection matrices are ``[out_features, in_features]`` like ``nn.Linear``."""

    attn_norm: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    o: np.ndarray
    ffn_norm: np.ndarray
    gate: np.ndarray
    up: np.ndarray
    down: np.ndarray


@dataclass
class LlamaWeights:
    """All weights of the model in float32; ``lm_head`` is ``None`` when tied to ``embed``."""

    hparams: LlamaHParams
    embed: np.ndarray  # [vocab, hidden]
    layers: list[LayerWeights]
    final_norm: np.ndarray
    lm_head: np.ndarray | None


def open_gguf(path: Path) -> Any:
    """Open a GGUF file read-only (memory-mapped) with the ``gguf`` package."""
    import gguf

    return gguf.GGUFReader(str(path), "r")


def field(reader: Any, key: str, default: Any = None) -> Any:
    """Return a metadata value (str, number, list) or ``default`` when absent."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (transformers' ``reverse_permute_weights``).

    ``w`` is ``[n_head * head_dim, in]``; within each head llama.cpp stored rows as interleaved pairs
    ``(0, d/2, 1, d/2+1, ...)``; this restores ``(0, 1, ..., d-1)``.
    """
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def read_hparams(reader: Any) -> LlamaHParams:
    """Hyperparameters from GGUF metadata (architecture must be ``llama``)."""
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"unsupported GGUF architecture {arch!r} (expected 'llama')")
    names = {t.name for t in reader.tensors}
    hidden = int(field(reader, "llama.embedding_length"))
    heads = int(field(reader, "llama.attention.head_count"))
    head_dim = int(field(reader, "llama.attention.key_length", hidden // heads))
    vocab = field(reader, "llama.vocab_size")
    if vocab is None:
        vocab = len(field(reader, "tokenizer.ggml.tokens"))
    if field(reader, "llama.rope.scaling.type") not in (None, "none"):
        raise ValueError("RoPE scaling is not supported by this builder")
    return LlamaHParams(
        num_layers=int(field(reader, "llama.block_count")),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(field(reader, "llama.attention.head_count_kv", heads)),
        head_dim=head_dim,
        intermediate_size=int(field(reader, "llama.feed_forward_length")),
        rms_norm_eps=float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field(reader, "llama.rope.freq_base", 10000.0)),
        vocab_size=int(vocab),
        max_position_embeddings=int(field(reader, "llama.context_length")),
        tie_word_embeddings="output.weight" not in names,
    )


def _dequantize(tensor: Any) -> np.ndarray:
    """One GGUF tensor as float32 numpy, numpy shape (= reversed GGUF shape, i.e. ``[out, in]``)."""
    import gguf

    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return np.ascontiguousarray(np.asarray(data, dtype=np.float32).reshape(shape))


def read_weights(path: Path) -> LlamaWeights:
    """Dequantise every tensor of a llama GGUF to float32, with q/k un-permuted to HF layout."""
    reader = open_gguf(path)
    hp = read_hparams(reader)
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str) -> np.ndarray:
        return _dequantize(tensors[name])

    layers = []
    for i in range(hp.num_layers):
        p = f"blk.{i}."
        layers.append(
            LayerWeights(
                attn_norm=get(p + "attn_norm.weight"),
                q=reverse_permute(get(p + "attn_q.weight"), hp.num_heads),
                k=reverse_permute(get(p + "attn_k.weight"), hp.num_kv_heads),
                v=get(p + "attn_v.weight"),
                o=get(p + "attn_output.weight"),
                ffn_norm=get(p + "ffn_norm.weight"),
                gate=get(p + "ffn_gate.weight"),
                up=get(p + "ffn_up.weight"),
                down=get(p + "ffn_down.weight"),
            )
        )
    return LlamaWeights(
        hparams=hp,
        embed=get("token_embd.weight"),
        layers=layers,
        final_norm=get("output_norm.weight"),
        lm_head=None if hp.tie_word_embeddings else get("output.weight"),
    )
