"""Build a Hugging Face ``tokenizers`` tokenizer (tokenizer.json) from a GGUF's tokenizer metadata.

Supports GPT-2 style byte-level BPE (``tokenizer.ggml.model == "gpt2"``).  The pre-tokenizer follows
llama.cpp's ``tokenizer.ggml.pre`` name: ``smollm`` (like ``starcoder``/``refact``) first splits every
digit on its own (``\\p{N}``), then applies the GPT-2 regex, which is exactly what SmolLM2's original
tokenizer.json does (``Digits(individual_digits=True)`` + ``ByteLevel``).
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from .gguf_weights import field

# llama.cpp token types (gguf.TokenType)
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4

_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva"}
_GPT2_ONLY = {"default", "gpt2"}


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _GPT2_ONLY:
        return byte_level
    raise ValueError(f"unsupported GGUF pre-tokenizer {pre!r}")


def build_tokenizer(reader: Any) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equal to the model's original one (no BOS/EOS added on encode)."""
    kind = field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"unsupported GGUF tokenizer model {kind!r} (expected byte-level BPE 'gpt2')")
    tokens: list[str] = list(field(reader, "tokenizer.ggml.tokens"))
    types: list[int] = list(field(reader, "tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    if field(reader, "tokenizer.ggml.add_bos_token", False) or field(
        reader, "tokenizer.ggml.add_eos_token", False
    ):
        raise ValueError("GGUF asks for automatic BOS/EOS; this builder only supports chat-template framing")

    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(str(field(reader, "tokenizer.ggml.pre", "default")))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types, strict=True)
            if ty == TOKEN_CONTROL
        ]
    )
    user = [
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types, strict=True)
        if ty == TOKEN_USER_DEFINED
    ]
    if user:
        tok.add_tokens(user)
    return tok
