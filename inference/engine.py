"""Opening the chat model a worker serves, as the batch scheduler expects it."""

from __future__ import annotations

import logging

from inference.kv_slots import SlotScheduler, is_slot_model
from inference.model_files import (
    LoadedModel,
    choose_providers,
    load_model,
    share_thread_pool,
    single_row_applies,
)
from inference.prefix_cache import PrefixCache
from inference.scheduler import BatchScheduler
from lotabots.settings import Settings

log = logging.getLogger(__name__)

ChatModel = LoadedModel


def prepare(model: LoadedModel) -> LoadedModel:
    """Fill in what the scheduler reads besides the ONNX I/O: context length, EOS set."""
    model.max_context = int(model.config.get("max_position_embeddings", 8192))  # type: ignore[attr-defined]
    model.eos_token_ids = frozenset(model.eos_token_ids)  # type: ignore[assignment]
    return model


def serving_variants(settings: Settings) -> list[str]:
    """The variants a worker with ``settings`` loads: the model variant, and the single-row one when set
    (built on every machine: whether it is used depends on the device found at load time)."""
    single = settings.model_single_row_variant
    if not single_row_applies(settings.model_variant, single, ["CPUExecutionProvider"]):
        return [settings.model_variant]
    return [settings.model_variant, single]


def share_pool_for_single_row(settings: Settings) -> bool:
    """At a worker process's start: when it will hold two sessions on the CPU (``single_row_applies``),
    give them one thread pool (``model_files.share_thread_pool``).  Returns whether it did."""
    if settings.inference_backend != "onnx" or not single_row_applies(
            settings.model_variant, settings.model_single_row_variant, choose_providers(settings.inference_device)):
        return False
    share_thread_pool(settings.inference_threads)
    log.info("one ONNX Runtime thread pool for the %s and %s sessions", settings.model_variant,
             settings.model_single_row_variant)
    return True


def open_chat_model(settings: Settings) -> LoadedModel:
    if settings.inference_backend == "simulated":  # TEST BACKEND: time per token, no CPU (issue 7)
        from inference.simulated import SimulatedChatModel

        return SimulatedChatModel(settings.simulated_ms_per_token)  # type: ignore[return-value]
    if settings.inference_backend == "triton":  # remote KServe v2 / Triton server (docs/triton.md; issue 8)
        from inference.triton_backend import RemoteChatModel

        return RemoteChatModel.from_settings(settings)  # type: ignore[return-value]
    model = load_model(settings.models_path, variant=settings.model_variant,
                       threads=settings.inference_threads, device=settings.inference_device,
                       cuda_graphs=settings.inference_cuda_graphs,
                       single_row_variant=settings.model_single_row_variant or None)
    if "CUDAExecutionProvider" in model.providers and not is_slot_model(model):
        # IO binding: the KV cache stays on the GPU (issue 8); a slot model's scheduler binds its own buffers
        from inference.gpu_runner import DeviceModel

        return prepare(DeviceModel(model))  # type: ignore[arg-type]
    return prepare(model)


def open_scheduler(model: LoadedModel, settings: Settings, max_batch: int | None = None) -> BatchScheduler:
    """The batch scheduler over ``model`` with the settings' batch, admission, prefill and prefix-cache bounds.

    A ``-slots`` variant gets :class:`inference.kv_slots.SlotScheduler` (fixed KV slots, CUDA graphs)."""
    kwargs = dict(
        max_batch=max_batch or settings.inference_max_batch,
        max_tokens_in_flight=settings.inference_max_tokens_in_flight,
        prefill_chunk=settings.inference_prefill_chunk,
        prefill_step_ratio=settings.inference_prefill_step_ratio,
        prefill_whole_tokens=settings.inference_prefill_whole_tokens,
        prefix_cache=PrefixCache(settings.inference_prefix_cache_mb << 20, block=settings.inference_prefix_block),
    )
    if is_slot_model(model):
        return SlotScheduler(model, kv_capacity=settings.inference_kv_capacity,
                             graphs=settings.inference_cuda_graphs, **kwargs)
    return BatchScheduler(model, **kwargs)
