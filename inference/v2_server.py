"""This project's chat model behind the KServe v2 / Open Inference Protocol, served by KServe's ModelServer.

`lotabots serve v2-model` runs it: the Triton backend's test server (tests/test_triton_backend.py),
and a way to put the ONNX engine behind any v2 client (a KServe InferenceService custom predictor,
tritonclient, perf_analyzer). :class:`ChatGenerationModel` speaks the text-in/text-out contract of
docs/triton.md (:data:`inference.triton_backend.INPUTS` / ``OUTPUTS``) and runs every request in one
:class:`inference.scheduler.BatchScheduler`, so concurrent requests share decode steps (continuous
batching). A gRPC call cancelled by its client cancels its sequence before the next decode step.

KServe's ModelServer listens on all interfaces (HTTP and gRPC); it has no host option.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from inference.engine import open_scheduler, prepare, share_pool_for_single_row
from inference.model_files import load_model
from inference.scheduler import BatchScheduler, SequenceParams, SequenceResult
from inference.triton_backend import INPUTS, OUTPUTS, TensorSpec
from lotabots.settings import Settings

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses the command line when imported; ours is not for it
try:
    import kserve
    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv

log = logging.getLogger(__name__)

GENERATIONS = Counter("lotabots_v2_generations_total", "generations finished by the v2 model server",
                      ["finish_reason"])
IN_FLIGHT = Gauge("lotabots_v2_sequences_in_flight", "sequences submitted and not yet finished")

_REFUSED = {"empty_prompt", "context_length_exceeded"}  # the request's fault: INVALID_ARGUMENT / HTTP 400


class ChatGenerationModel(kserve.Model):
    """The built ONNX chat model as a v2 model named ``name``: ``text_input`` → ``text_output``.

    ``text_input`` is taken as a rendered prompt: special-token markup in it (``<|im_start|>``) is
    tokenised as special tokens, as a Triton LLM deployment does.
    """

    def __init__(self, name: str, settings: Settings) -> None:
        super().__init__(name)
        self.settings = settings
        self.scheduler: BatchScheduler | None = None

    def load(self) -> bool:
        s = self.settings
        self.chat_model = prepare(load_model(s.models_path, variant=s.model_variant, threads=s.inference_threads,
                                             device=s.inference_device,
                                             single_row_variant=s.model_single_row_variant or None))
        self.scheduler = open_scheduler(self.chat_model, s)
        self.scheduler.start()
        self.ready = True
        return True

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        self.ready = False

    def get_input_types(self) -> list[dict[str, Any]]:
        return [_declared(spec) for spec in INPUTS]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [_declared(spec) for spec in OUTPUTS]

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the v2 protocol only (POST /v2/models/{name}/infer)")
        inputs = {i.name: i.as_numpy() for i in payload.inputs}
        prompt, params = _generation_request(inputs)
        assert self.scheduler is not None
        ids = await asyncio.to_thread(self.chat_model.encode, prompt)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[SequenceResult] = loop.create_future()

        def settle(result: SequenceResult) -> None:
            if not done.done():  # a cancelled call's future is done already
                done.set_result(result)

        def finished(result: SequenceResult) -> None:  # engine thread
            GENERATIONS.labels(result.finish_reason).inc()
            IN_FLIGHT.dec()
            loop.call_soon_threadsafe(settle, result)

        seq_id = uuid.uuid4().hex  # never a client's id: the scheduler ignores an id already running
        IN_FLIGHT.inc()
        self.scheduler.submit(seq_id, ids, params, on_finish=finished)
        try:
            result = await done
        except asyncio.CancelledError:  # the client cancelled the call (gRPC): stop generating
            self.scheduler.cancel(seq_id)
            raise
        if result.finish_reason == "error":
            message = f"{result.error_code}: {result.error_message}"
            raise InvalidInput(message) if result.error_code in _REFUSED else InferenceError(message)
        outputs = [
            _output("text_output", "BYTES", np.array([result.text.encode()], dtype=np.object_)),
            _output("finish_reason", "BYTES", np.array([result.finish_reason.encode()], dtype=np.object_)),
            _output("prompt_tokens", "INT32", np.array([result.prompt_tokens], dtype=np.int32)),
            _output("completion_tokens", "INT32", np.array([result.completion_tokens], dtype=np.int32)),
        ]
        return InferResponse(response_id=payload.id or seq_id, model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs)


def _declared(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _output(name: str, datatype: str, data: np.ndarray) -> InferOutput:
    return InferOutput(name=name, shape=list(data.shape), datatype=datatype, data=data)


def _generation_request(inputs: dict[str, np.ndarray]) -> tuple[str, SequenceParams]:
    """Read the contract's inputs; a missing required input or a bad value is InvalidInput (HTTP 400)."""
    known = {spec.name for spec in INPUTS}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise InvalidInput(f"unknown inputs {unknown}; this model takes {sorted(known)}")
    for spec in INPUTS:
        if not spec.optional and spec.name not in inputs:
            raise InvalidInput(f"missing required input {spec.name!r}")

    def scalar(name: str, default: Any) -> Any:
        values = np.asarray(inputs[name]).reshape(-1) if name in inputs else np.empty(0)
        return values[0] if values.size else default

    prompt = _text(scalar("text_input", b""))
    max_tokens = int(scalar("max_tokens", 0))
    temperature = float(scalar("temperature", 0.0))
    top_p = float(scalar("top_p", 1.0))
    seed = scalar("seed", None)
    stop = tuple(_text(v) for v in np.asarray(inputs.get("stop", [])).reshape(-1) if _text(v))
    if max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise InvalidInput("temperature must be >= 0 and top_p in (0, 1]")
    return prompt, SequenceParams(max_tokens, temperature, top_p, None if seed is None else int(seed), stop,
                                  ignore_eos=bool(scalar("ignore_eos", False)))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def run_v2_model_server(settings: Settings, http_port: int | None = None, grpc_port: int | None = None) -> int:
    """Serve the chat model as ``settings.triton_model`` over v2 REST (and gRPC unless its port is 0)."""
    http_port = http_port or settings.v2_server_http_port
    grpc_port = settings.v2_server_grpc_port if grpc_port is None else grpc_port
    share_pool_for_single_row(settings)  # its own process, as a worker: the two sessions get one pool
    model = ChatGenerationModel(settings.triton_model, settings)
    model.load()
    log.info("v2 model server: model %r on HTTP :%d, gRPC %s", settings.triton_model, http_port,
             f":{grpc_port}" if grpc_port else "off")
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port or 8081, enable_grpc=bool(grpc_port),
                                workers=1, enable_latency_logging=False)
    server.start([model])
    return 0
