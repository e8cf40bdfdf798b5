"""The Triton backend: generation on a remote KServe v2 / Open Inference Protocol server (Triton's).

The worker keeps its Kafka pipeline and hands each request to :class:`RemoteGenerationScheduler`
instead of the local batch scheduler. Each request is one unary ``ModelInfer`` call in the common
text-in/text-out interface of Triton LLM deployments (``text_input``, ``max_tokens``, … →
``text_output``); batching across requests is the server's job. docs/triton.md is the contract:
tensor names, datatypes, shapes, which are optional, and how each is filled or read.

* The worker renders the chat template (:func:`inference.chat.render_chat`) and sends the rendered
  text; :class:`RemoteChatModel` is what it holds in place of a local model.
* Up to ``max_batch`` calls run at once on an asyncio loop in the scheduler's own thread, with
  tritonclient's asyncio clients (gRPC or HTTP).
* Cancel: over gRPC the call is cancelled, which a server with request cancellation (Triton, the
  v2 test server) sees and stops generating; over HTTP the call is abandoned (the connection is
  closed) and the server finishes the generation unseen. Either way the sequence ends ``canceled``.
* Token counts come from the response when the server reports them, else from the local tokenizer
  (``tokenizer.json`` of the built model).

tritonclient (the ``triton`` extra) is imported only when a client is made, so the contract below
can be imported without it (the v2 server declares its metadata from it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inference.chat import render_chat
from inference.scheduler import SequenceParams, SequenceResult

log = logging.getLogger(__name__)

# ---- the contract (docs/triton.md) ----------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract: v2 datatype, shape without a batch dimension (-1 = any length)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = True


# What the v2 test server declares (and the worker sends when the model declares it, see docs).
INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", "BYTES", (1,), optional=False),
    TensorSpec("max_tokens", "INT32", (1,), optional=False),
    TensorSpec("temperature", "FP32", (1,)),
    TensorSpec("top_p", "FP32", (1,)),
    TensorSpec("seed", "UINT64", (1,)),
    TensorSpec("stop", "BYTES", (-1,)),
    TensorSpec("ignore_eos", "BOOL", (1,)),
)
OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_output", "BYTES", (1,), optional=False),
    TensorSpec("finish_reason", "BYTES", (1,)),
    TensorSpec("prompt_tokens", "INT32", (1,)),
    TensorSpec("completion_tokens", "INT32", (1,)),
)
# Other deployments' names for the same thing (TensorRT-LLM's ensemble, the vLLM backend); the
# first name a model declares wins. Outputs are read under any of their names.
INPUT_ALIASES: dict[str, tuple[str, ...]] = {"seed": ("seed", "random_seed"), "stop": ("stop", "stop_words")}
OUTPUT_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt_tokens": ("prompt_tokens", "num_input_tokens"),
    "completion_tokens": ("completion_tokens", "num_output_tokens"),
}
# Understood when a model declares them, never declared by the v2 test server: TensorRT-LLM samples
# unless top_k is 1; the vLLM backend echoes the prompt, and reports counts and the finish reason only
# when asked, and takes its sampling parameters as one JSON string.
EXTRA_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("top_k", "INT32", (1,)),
    TensorSpec("exclude_input_in_output", "BOOL", (1,)),
    TensorSpec("return_num_input_tokens", "BOOL", (1,)),
    TensorSpec("return_num_output_tokens", "BOOL", (1,)),
    TensorSpec("return_finish_reason", "BOOL", (1,)),
    TensorSpec("sampling_parameters", "BYTES", (1,)),
)

_NUMPY_TYPES: dict[str, Any] = {
    "BYTES": np.object_, "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


@dataclass(frozen=True)
class DeclaredInput:
    """An input as the model's metadata declares it (shape includes the batch dimension if any)."""

    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Tensor:
    """A request tensor ready for the wire."""

    name: str
    datatype: str
    data: np.ndarray


def _tensor(name: str, datatype: str, values: Sequence[Any]) -> Tensor:
    dtype = _NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"input {name!r}: datatype {datatype} is not supported")
    if datatype == "BYTES":
        data = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
    else:
        data = np.array(values, dtype=dtype)
    return Tensor(name, datatype, data)


def request_tensors(
    prompt: str, params: SequenceParams, declared: Mapping[str, DeclaredInput] | None = None,
) -> list[Tensor]:
    """The inputs of one generation call.

    ``declared`` is the model's metadata (name → datatype, shape). An optional input is sent only when
    the model declares it (under the alias it declares, in the datatype it declares); a model that
    declares no inputs at all gets ``text_input``, ``max_tokens``, ``temperature``, ``top_p`` and, when
    set, ``seed`` and ``stop``. A rank-2 ``text_input`` (Triton's shape for models with
    ``max_batch_size > 0``) adds a leading batch dimension of 1 to every tensor.
    """
    declared = dict(declared or {})
    wanted: list[tuple[str, str, list[Any]]] = [
        ("text_input", "BYTES", [prompt]),
        ("max_tokens", "INT32", [params.max_tokens]),
        ("temperature", "FP32", [params.temperature]),
        ("top_p", "FP32", [params.top_p]),
    ]
    if params.seed is not None:
        wanted.append(("seed", "UINT64", [params.seed]))
    if params.stop:
        wanted.append(("stop", "BYTES", list(params.stop)))
    if params.ignore_eos:
        wanted.append(("ignore_eos", "BOOL", [True]))
    required = {"text_input", "max_tokens"}
    if declared:
        if params.temperature == 0.0:
            wanted.append(("top_k", "INT32", [1]))
        wanted += [(flag, "BOOL", [True]) for flag in (
            "exclude_input_in_output", "return_num_input_tokens", "return_num_output_tokens", "return_finish_reason")]
        if "sampling_parameters" in declared:  # the vLLM backend: max_tokens and the rest travel in here
            required = {"text_input"}
            sampling: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature,
                                        "top_p": params.top_p}
            if params.seed is not None:
                sampling["seed"] = params.seed
            if params.stop:
                sampling["stop"] = list(params.stop)
            if params.ignore_eos:
                sampling["ignore_eos"] = True
            wanted.append(("sampling_parameters", "BYTES", [json.dumps(sampling)]))
    tensors: list[Tensor] = []
    for name, datatype, values in wanted:
        wire_name = name
        if declared:
            wire_name = next((n for n in INPUT_ALIASES.get(name, (name,)) if n in declared), "")
            if not wire_name:
                if name in required:
                    raise ValueError(f"the model declares no {name!r} input; see docs/triton.md")
                continue  # an optional input this model does not take
            datatype = declared[wire_name].datatype
        tensors.append(_tensor(wire_name, datatype, values))
    text = declared.get("text_input")
    if text is not None and len(text.shape) == 2:
        tensors = [Tensor(t.name, t.datatype, t.data.reshape(1, -1)) for t in tensors]
    return tensors


@dataclass(frozen=True)
class RemoteGeneration:
    """What a response says: the text, and what the server chose to report besides."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def read_generation(outputs: Mapping[str, np.ndarray]) -> RemoteGeneration:
    """Read a response's outputs (name → array) as the contract says; only ``text_output`` is required."""
    if "text_output" not in outputs:
        raise ValueError(f"the response has no 'text_output' (outputs: {sorted(outputs)})")
    text = "".join(_text(v) for v in np.asarray(outputs["text_output"], dtype=np.object_).reshape(-1))

    def first_int(key: str) -> int | None:
        for name in OUTPUT_ALIASES[key]:
            if name in outputs and np.asarray(outputs[name]).size:
                return int(np.asarray(outputs[name]).reshape(-1)[0])
        return None

    reason = None
    if "finish_reason" in outputs and np.asarray(outputs["finish_reason"]).size:
        reason = _text(np.asarray(outputs["finish_reason"], dtype=np.object_).reshape(-1)[0]) or None
    return RemoteGeneration(text, reason, first_int("prompt_tokens"), first_int("completion_tokens"))


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes | bytearray) else str(value)


# ---- what the worker holds instead of a local model -----------------------------------------------


def neutralise_markup(content: str) -> str:
    """Break ``<|…|>`` special-token markup in message text (a zero-width space after ``<``).

    Locally, message text is tokenised with special tokens as plain text; a remote server tokenises
    the whole rendered prompt, so ``<|im_start|>`` typed by a user would open a forged turn there.
    """
    return content.replace("<|", "<\u200b|")


class RemoteChatModel:
    """The chat side of the Triton backend: renders prompts for ``text_input`` and counts tokens.

    ``tokenizer`` (the built model's ``tokenizer.json``) counts tokens when the server reports none.
    """

    backend = "triton"

    def __init__(self, tokenizer: Any | None = None, model_name: str = "triton") -> None:
        self.tokenizer = tokenizer
        self.config = {"model": model_name}  # the name usage is recorded under (as a built model's config)

    @classmethod
    def from_settings(cls, settings: Any) -> RemoteChatModel:
        from inference.model_build import variant_dir

        try:
            import tritonclient  # noqa: F401  (fail at start, not at the first request)
        except ModuleNotFoundError as exc:
            raise RuntimeError("the triton backend needs the 'triton' extra: pip install 'lotabots[triton]'") from exc
        path = variant_dir(settings.models_path, settings.model_variant) / "tokenizer.json"
        return cls(load_tokenizer(path), model_name=f"triton/{settings.triton_model}")

    def encode_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt the server receives: the chat template applied, message text neutralised."""
        safe = [{**m, "content": neutralise_markup(m["content"])} if isinstance(m.get("content"), str) else m
                for m in messages]
        return render_chat(safe, add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            raise LookupError("the server reported no token counts and no local tokenizer.json was found")
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def load_tokenizer(path: Path) -> Any | None:
    if not path.is_file():
        log.warning("no tokenizer at %s: token counts must come from the server", path)
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


# ---- the protocol client ---------------------------------------------------------------------------


class RemoteCallError(Exception):
    """A failed call. ``kind``: unavailable (worth another try), rejected (the server refused the
    request), error (anything else, timeouts included)."""

    def __init__(self, kind: Literal["unavailable", "rejected", "error"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


_GRPC_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"}
_GRPC_REJECTED = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.FAILED_PRECONDITION",
                  "StatusCode.OUT_OF_RANGE", "StatusCode.UNIMPLEMENTED"}


def _classify(status: str) -> Literal["unavailable", "rejected", "error"]:
    if status in _GRPC_UNAVAILABLE or status in ("429", "502", "503"):
        return "unavailable"
    if status in _GRPC_REJECTED or (status.isdigit() and 400 <= int(status) < 500):
        return "rejected"
    return "error"


def _http_transport_error(exc: Exception) -> Literal["unavailable", "error"] | None:
    """aiohttp's own errors (the HTTP client): a lost connection is worth another try."""
    try:
        import aiohttp
    except ModuleNotFoundError:
        return None
    if isinstance(exc, aiohttp.ClientConnectionError):  # refused, reset, server disconnected
        return "unavailable"
    return "error" if isinstance(exc, aiohttp.ClientError) else None


class V2Client:
    """tritonclient's asyncio client (``grpc`` or ``http``) reduced to what generation needs.

    Make it on the loop that uses it: both clients bind to the running loop.
    """

    def __init__(self, url: str, protocol: Literal["grpc", "http"], model: str, version: str = "",
                 timeout_s: float = 600.0) -> None:
        self.protocol = protocol
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        if protocol == "grpc":
            import tritonclient.grpc.aio as grpcclient

            self._mod: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(url)
        elif protocol == "http":
            import tritonclient.http.aio as httpclient

            self._mod = httpclient
            self._client = httpclient.InferenceServerClient(url, conn_timeout=timeout_s)
        else:
            raise ValueError(f"unknown protocol {protocol!r} (grpc, http)")

    async def declared_inputs(self) -> dict[str, DeclaredInput]:
        meta = await self._call(self._metadata())
        return {i["name"]: DeclaredInput(i["datatype"].upper(), tuple(int(d) for d in i.get("shape", ())))
                for i in meta.get("inputs", [])}

    async def _metadata(self) -> dict[str, Any]:
        if self.protocol == "grpc":
            return dict(await self._client.get_model_metadata(self.model, self.version, as_json=True))
        return dict(await self._client.get_model_metadata(self.model, self.version))

    async def infer(self, tensors: Sequence[Tensor], request_id: str = "") -> dict[str, np.ndarray]:
        inputs = []
        for t in tensors:
            tensor = self._mod.InferInput(t.name, list(t.data.shape), t.datatype)
            tensor.set_data_from_numpy(t.data)
            inputs.append(tensor)
        kwargs: dict[str, Any] = {"model_version": self.version, "request_id": request_id}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = await self._call(self._client.infer(self.model, inputs, **kwargs))
        response = result.get_response(as_json=True) if self.protocol == "grpc" else result.get_response()
        return {o["name"]: result.as_numpy(o["name"]) for o in response.get("outputs", [])}

    async def _call(self, call: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return await call
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            raise RemoteCallError(_classify(status), f"{status}: {exc.message()}"[:500]) from exc
        except TimeoutError as exc:  # before OSError, its base class: a slow generation is not retried
            raise RemoteCallError("error", f"no answer within {self.timeout_s:g}s") from exc
        except OSError as exc:  # connection refused or reset; aiohttp's connection errors are OSErrors
            raise RemoteCallError("unavailable", f"{type(exc).__name__}: {exc}"[:500]) from exc
        except Exception as exc:
            kind = _http_transport_error(exc)
            if kind is None:
                raise
            raise RemoteCallError(kind, f"{type(exc).__name__}: {exc}"[:500]) from exc

    async def close(self) -> None:
        await self._client.close()


# ---- the scheduler the worker uses with this backend -----------------------------------------------


@dataclass
class _RemoteSequence:
    seq_id: str
    prompt: str
    params: SequenceParams
    on_start: Callable[[str, float], None] | None
    on_finish: Callable[[SequenceResult], None]
    task: asyncio.Task[None] | None = None
    started_at: float = 0.0
    canceled: bool = False
    dropped: bool = False  # handed back: finishes silently
    done: bool = field(default=False)


class RemoteGenerationScheduler:
    """Runs each sequence as one remote generation call, up to ``max_batch`` at once.

    The same surface the worker uses from :class:`inference.scheduler.BatchScheduler` (``submit``,
    ``cancel``, ``drop``, ``has_capacity``, ``in_flight``, ``max_batch``, ``start``, ``stop``), and the
    same :class:`SequenceResult` callbacks, invoked from the scheduler's thread. ``prompt`` is the
    rendered chat text (:meth:`RemoteChatModel.encode_chat`), not token ids.
    """

    def __init__(self, model: RemoteChatModel, client_factory: Callable[[], V2Client], *, max_batch: int = 32,
                 max_attempts: int = 3, retry_backoff_s: float = 0.5) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self._client_factory = client_factory
        self._client: V2Client | None = None
        self._declared: dict[str, DeclaredInput] | None = None
        self._lock = threading.Lock()
        self._by_id: dict[str, _RemoteSequence] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self.calls = 0
        self.tokens_generated = 0

    @classmethod
    def from_settings(cls, model: RemoteChatModel, settings: Any, max_batch: int | None = None,
                      ) -> RemoteGenerationScheduler:
        url = settings.triton_url or ("127.0.0.1:8001" if settings.triton_protocol == "grpc" else "127.0.0.1:8000")
        return cls(model, lambda: V2Client(url, settings.triton_protocol, settings.triton_model,
                                           settings.triton_model_version, settings.triton_timeout_s),
                   max_batch=max_batch or settings.triton_max_concurrency, max_attempts=settings.triton_max_attempts)

    # ---- public, any thread -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_loop, name="remote-generation", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def submit(
        self, seq_id: str, prompt: str, params: SequenceParams,
        on_finish: Callable[[SequenceResult], None], on_start: Callable[[str, float], None] | None = None,
    ) -> None:
        if not isinstance(prompt, str):
            raise TypeError("the remote backend takes the rendered prompt text, not token ids")
        if not prompt:
            now = time.time()
            on_finish(SequenceResult(seq_id, "", [], "error", 0, 0, now, None, now, "empty_prompt",
                                     "the prompt is empty"))
            return
        seq = _RemoteSequence(seq_id, prompt, params, on_start, on_finish)
        with self._lock:
            if seq_id in self._by_id:
                return  # already running: a duplicate delivery of the same request
            self._by_id[seq_id] = seq
        self._loop.call_soon_threadsafe(self._begin, seq)

    def cancel(self, seq_id: str) -> bool:
        """End a sequence ``canceled`` now; over gRPC the server is told to stop too."""
        with self._lock:
            seq = self._by_id.get(seq_id)
            if seq is None:
                return False
            seq.canceled = True
        self._loop.call_soon_threadsafe(self._cancel_task, seq)
        return True

    def drop(self, seq_id: str) -> None:
        """Hand a sequence back (its partition was revoked): stop it without a result."""
        with self._lock:
            seq = self._by_id.get(seq_id)
            if seq is None:
                return
            seq.canceled = seq.dropped = True
        self._loop.call_soon_threadsafe(self._cancel_task, seq)

    def has_capacity(self) -> bool:
        return self.in_flight() < self.max_batch

    def in_flight(self) -> int:
        with self._lock:
            return len(self._by_id)

    # ---- the loop thread ----------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except BaseException as exc:  # e.g. the triton extra is not installed
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

    async def _open(self) -> None:
        # The clients bind to the running loop (aiohttp's session needs one), so make them on it.
        self._client = self._client_factory()
        self._slots = asyncio.Semaphore(self.max_batch)
        self._declared_lock = asyncio.Lock()

    async def _shutdown(self) -> None:
        with self._lock:
            leftovers = list(self._by_id.values())
            for seq in leftovers:
                seq.canceled = seq.dropped = True
        tasks = [s.task for s in leftovers if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    def _begin(self, seq: _RemoteSequence) -> None:
        seq.task = self._loop.create_task(self._generate(seq))

    def _cancel_task(self, seq: _RemoteSequence) -> None:
        if seq.task is not None and not seq.task.done():
            seq.task.cancel()

    async def _generate(self, seq: _RemoteSequence) -> None:
        try:
            async with self._slots:
                if seq.canceled:
                    self._finish(seq, "canceled")
                    return
                seq.started_at = time.time()
                if seq.on_start:
                    seq.on_start(seq.seq_id, seq.started_at)
                generation = await self._call_with_retries(seq)
        except asyncio.CancelledError:
            self._finish(seq, "canceled")
            return
        except RemoteCallError as exc:
            code = {"rejected": "inference_backend_rejected", "unavailable": "inference_backend_unavailable"}.get(
                exc.kind, "inference_backend_error")
            self._finish(seq, "error", error_code=code, error_message=str(exc))
            return
        except Exception as exc:  # a malformed response fails its sequence, not the worker
            log.exception("remote generation failed for %s", seq.seq_id)
            self._finish(seq, "error", error_code="inference_backend_error",
                         error_message=f"{type(exc).__name__}: {exc}"[:500])
            return
        self._finish_generated(seq, generation)

    async def _call_with_retries(self, seq: _RemoteSequence) -> RemoteGeneration:
        assert self._client is not None
        delay = self.retry_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                declared = await self._declared_inputs()
                self.calls += 1
                outputs = await self._client.infer(request_tensors(seq.prompt, seq.params, declared), seq.seq_id)
                return read_generation(outputs)
            except RemoteCallError as exc:
                if exc.kind != "unavailable" or attempt == self.max_attempts:
                    raise
                log.warning("backend unavailable for %s (try %d/%d): %s", seq.seq_id, attempt,
                            self.max_attempts, exc)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _declared_inputs(self) -> dict[str, DeclaredInput]:
        # Read once per worker: which optional inputs, under which names, with or without a batch dimension.
        assert self._client is not None
        async with self._declared_lock:
            if self._declared is None:
                self._declared = await self._client.declared_inputs()
            return self._declared

    def _finish_generated(self, seq: _RemoteSequence, gen: RemoteGeneration) -> None:
        text, reason = gen.text, gen.finish_reason
        cut = min((text.find(s) for s in seq.params.stop if s in text), default=-1)
        if cut >= 0:  # some servers return the stop word itself
            text, reason = text[:cut], "stop"
        try:
            prompt_tokens = gen.prompt_tokens if gen.prompt_tokens is not None else self.model.count_tokens(seq.prompt)
            completion_tokens = (gen.completion_tokens if gen.completion_tokens is not None
                                 else self.model.count_tokens(gen.text))
        except LookupError as exc:
            self._finish(seq, "error", error_code="token_count_unavailable", error_message=str(exc))
            return
        if reason not in ("stop", "length"):
            reason = "length" if completion_tokens >= seq.params.max_tokens else "stop"
        self.tokens_generated += completion_tokens
        self._finish(seq, reason, text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _finish(self, seq: _RemoteSequence, reason: str, *, text: str = "", prompt_tokens: int = 0,
                completion_tokens: int = 0, error_code: str | None = None, error_message: str | None = None) -> None:
        with self._lock:
            self._by_id.pop(seq.seq_id, None)
            if seq.done:
                return
            seq.done = True
        if seq.dropped:
            return
        now = time.time()
        result = SequenceResult(seq.seq_id, text, [], reason, prompt_tokens, completion_tokens,
                                seq.started_at or now, None, now, error_code, error_message)
        try:
            seq.on_finish(result)
        except Exception:
            log.exception("on_finish callback failed for %s", seq.seq_id)
