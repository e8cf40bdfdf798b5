"""Read a llama-architecture GGUF: hyperparameters and float32 weights in Hugging Face layout.

llama.cpp's ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj``/``k_proj`` so that its RoPE can
rotate adjacent pairs (GPT-J style).  Hugging Face's Llama rotates halves (``rotate_half``), and
transformers' GGUF loader undoes the permutation on load; :func:`reverse_permute` does the same here,
so the weights (and the KV cache) are laid out exactly as in the reference model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QK = 32  # weights per block in Q4_1 and Q8_0


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
class BlockQuantized:
    """A ``[rows, cols]`` matrix as the GGUF stores it: blocks of 32 weights along a row (``cols``).

    ``w = scale * q + offset`` per block, with ``scale``/``offset`` float16 as stored (``offset`` is
    Q4_1's block minimum; ``None`` for the symmetric Q8_0).  ``q`` is ``[rows, blocks, 32]``: ``uint8``
    0..15 for Q4_1, ``int8`` for Q8_0.  Quantised model variants repack these blocks instead of
    requantising the dequantised floats, so they run on exactly the GGUF's weights.
    """

    kind: str  # "q4_1" | "q8_0"
    scale: np.ndarray
    offset: np.ndarray | None
    q: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.q.shape[0], self.q.shape[1] * self.q.shape[2])

    def dequantize(self) -> np.ndarray:
        """float32 ``[rows, cols]``, computed exactly as gguf's numpy dequantisation does."""
        d = self.scale.astype(np.float32)[..., None]
        w = self.q.astype(np.float32) * d if self.offset is None else d * self.q.astype(np.float32)
        if self.offset is not None:
            w = w + self.offset.astype(np.float32)[..., None]
        return np.ascontiguousarray(w.reshape(self.shape))

    def take_rows(self, rows: np.ndarray) -> BlockQuantized:
        off = None if self.offset is None else self.offset[rows]
        return BlockQuantized(self.kind, self.scale[rows], off, self.q[rows])

    @staticmethod
    def concat_rows(parts: Sequence[BlockQuantized]) -> BlockQuantized:
        kinds = {p.kind for p in parts}
        if len(kinds) != 1:
            raise ValueError(f"cannot stack blocks of different kinds {sorted(kinds)}")
        offsets = [p.offset for p in parts]
        off = None if any(o is None for o in offsets) else np.concatenate(offsets)  # type: ignore[arg-type]
        return BlockQuantized(
            parts[0].kind, np.concatenate([p.scale for p in parts]), off, np.concatenate([p.q for p in parts])
        )


Matrix = np.ndarray | BlockQuantized


def as_float(w: Matrix) -> np.ndarray:
    """A matrix as float32, whichever form it was read in."""
    return w.dequantize() if isinstance(w, BlockQuantized) else w


def concat_rows(parts: Sequence[Matrix]) -> Matrix:
    """Stack matrices along the output axis (q|k|v, gate|up), keeping GGUF blocks when all have them."""
    if all(isinstance(p, BlockQuantized) for p in parts):
        return BlockQuantized.concat_rows(parts)  # type: ignore[arg-type]
    return np.concatenate([as_float(p) for p in parts], axis=0)


@dataclass
class LayerWeights:
    """One decoder layer; projection matrices are ``[out_features, in_features]`` like ``nn.Linear``."""

    attn_norm: np.ndarray
    q: Matrix
    k: Matrix
    v: Matrix
    o: Matrix
    ffn_norm: np.ndarray
    gate: Matrix
    up: Matrix
    down: Matrix


@dataclass
class LlamaWeights:
    """All weights of the model; ``lm_head`` is ``None`` when tied to ``embed``.

    Matrices are float32, or :class:`BlockQuantized` when read with ``keep_blocks=True`` (norms stay
    float32 either way).
    """

    hparams: LlamaHParams
    embed: Matrix  # [vocab, hidden]
    layers: list[LayerWeights]
    final_norm: np.ndarray
    lm_head: Matrix | None


def open_gguf(path: Path) -> Any:
    """Open a GGUF file read-only (memory-mapped) with the ``gguf`` package."""
    import gguf

    return gguf.GGUFReader(str(path), "r")


def field(reader: Any, key: str, default: Any = None) -> Any:
    """Return a metadata value (str, number, list) or ``default`` when absent."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def reverse_permute(w: Matrix, n_head: int) -> Matrix:
    """Undo llama.cpp's q/k row permutation (transformers' ``reverse_permute_weights``).

    ``w`` is ``[n_head * head_dim, in]``; within each head llama.cpp stored rows as interleaved pairs
    ``(0, d/2, 1, d/2+1, ...)``; this restores ``(0, 1, ..., d-1)``.
    """
    if isinstance(w, BlockQuantized):  # permute whole rows (blocks run along a row)
        rows = reverse_permute(np.arange(w.shape[0])[:, None], n_head)[:, 0]
        return w.take_rows(np.asarray(rows))
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


def _blocks(tensor: Any) -> BlockQuantized | None:
    """A Q4_1 / Q8_0 tensor's blocks as stored; ``None`` for any other type."""
    import gguf

    kind = tensor.tensor_type
    raw = np.asarray(tensor.data, dtype=np.uint8)
    rows = int(tensor.shape.tolist()[-1]) if len(tensor.shape) > 1 else 1
    if kind == gguf.GGMLQuantizationType.Q4_1:
        b = raw.reshape(rows, -1, 4 + QK // 2)
        scale = np.ascontiguousarray(b[..., 0:2]).view(np.float16)[..., 0]
        offset = np.ascontiguousarray(b[..., 2:4]).view(np.float16)[..., 0]
        packed = b[..., 4:]  # byte j: low nibble = weight j, high nibble = weight j + 16
        q = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)
        return BlockQuantized("q4_1", scale, offset, np.ascontiguousarray(q))
    if kind == gguf.GGMLQuantizationType.Q8_0:
        b = raw.reshape(rows, -1, 2 + QK)
        scale = np.ascontiguousarray(b[..., 0:2]).view(np.float16)[..., 0]
        q = np.ascontiguousarray(b[..., 2:]).view(np.int8)
        return BlockQuantized("q8_0", scale, None, q)
    return None


def read_weights(path: Path, keep_blocks: bool = False) -> LlamaWeights:
    """Read every tensor of a llama GGUF, with q/k un-permuted to HF layout.

    Default: all float32 (gguf's dequantisation).  ``keep_blocks``: Q4_1/Q8_0 matrices stay
    :class:`BlockQuantized` (other types are still dequantised).
    """
    reader = open_gguf(path)
    hp = read_hparams(reader)
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str) -> Matrix:
        if keep_blocks and (blocks := _blocks(tensors[name])) is not None:
            return blocks
        return _dequantize(tensors[name])

    def get_float(name: str) -> np.ndarray:
        return _dequantize(tensors[name])

    layers = []
    for i in range(hp.num_layers):
        p = f"blk.{i}."
        layers.append(
            LayerWeights(
                attn_norm=get_float(p + "attn_norm.weight"),
                q=reverse_permute(get(p + "attn_q.weight"), hp.num_heads),
                k=reverse_permute(get(p + "attn_k.weight"), hp.num_kv_heads),
                v=get(p + "attn_v.weight"),
                o=get(p + "attn_output.weight"),
                ffn_norm=get_float(p + "ffn_norm.weight"),
                gate=get(p + "ffn_gate.weight"),
                up=get(p + "ffn_up.weight"),
                down=get(p + "ffn_down.weight"),
            )
        )
    return LlamaWeights(
        hparams=hp,
        embed=get("token_embd.weight"),
        layers=layers,
        final_norm=get_float("output_norm.weight"),
        lm_head=None if hp.tie_word_embeddings else get("output.weight"),
    )
