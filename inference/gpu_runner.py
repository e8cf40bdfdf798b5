"""The model on an ONNX Runtime device (CUDA EP) with IO binding: the KV cache never leaves the device.

:class:`DeviceModel` keeps :class:`inference.model_files.LoadedModel`'s ``forward`` contract, so the
batch scheduler drives it unchanged, with two differences in what travels:

* ``present``/``past`` are :class:`DeviceTensor` handles (ONNX Runtime ``OrtValue`` on the device):
  each step binds the previous step's ``present`` as this step's ``past`` without a host copy.
* only ``input_ids``/``attention_mask``/``position_ids`` go up (a few hundred bytes) and only the
  last-position ``logits`` come down (float32, as the samplers expect).

The scheduler's KV bookkeeping (a sequence joining the left-padded batch, finished rows leaving it)
runs on the device too: :class:`DeviceKVOps` are two small ONNX graphs (pad + concat; gather rows +
slice columns) over all layers at once, run on the same execution provider.  The scheduler finds
them as ``model.kv_ops``.

For greedy decoding, :meth:`DeviceModel.forward_greedy` returns only the argmax token ids (an
``ArgMax`` graph on the device), so the logits never cross to the host at all.

CUDA graphs are not used: this graph's shapes change every step (the KV cache grows by one column and
the batch changes as sequences join and leave), and ONNX Runtime replays a captured CUDA graph only
for fixed shapes and addresses.  See bench/README.md ("Inference engine") for what that costs and the
fixed-capacity design it would need.

The same code runs on the CPU execution provider (``device="cpu"``), which is how the tests pin it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from .model_files import LoadedModel, load_model

OPSET = 17  # ops every execution provider has had kernels for since long


@dataclass(frozen=True)
class DeviceTensor:
    """A tensor resident on the session's device; ``shape`` reads like numpy's."""

    value: ort.OrtValue

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape())

    def numpy(self) -> np.ndarray:
        """Copy to the host (tests and debugging only: the decode loop never calls it)."""
        return self.value.numpy()


DeviceKV = tuple[Any, Any]  # (key, value): DeviceTensor, or a host numpy array before the first step


def _bind_input(io: ort.IOBinding, name: str, t: Any) -> None:
    if isinstance(t, DeviceTensor):
        io.bind_ortvalue_input(name, t.value)
    else:
        io.bind_cpu_input(name, np.ascontiguousarray(t))


def _session(model: Any, providers: list[Any]) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=providers)


class DeviceKVOps:
    """The scheduler's KV-cache edits as device graphs over all ``2 * num_layers`` tensors at once."""

    def __init__(self, num_tensors: int, float_type: int, providers: list[Any], device: str, device_id: int):
        self.n = num_tensors
        self.device, self.device_id = device, device_id
        self._join = _session(self._join_graph(num_tensors, float_type), providers)
        self._keep = _session(self._keep_graph(num_tensors, float_type), providers)

    @staticmethod
    def _join_graph(n: int, ft: int) -> Any:
        """``out_i = concat(pad_left(batch_i, grow), pad_left(new_i, pad))`` along the batch axis."""
        nodes, inputs, outputs = [], [], []
        for name in ("grow_pads", "new_pads"):
            inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, [8]))
        for i in range(n):
            inputs += [
                helper.make_tensor_value_info(f"batch.{i}", ft, ["b", "h", "w", "d"]),
                helper.make_tensor_value_info(f"new.{i}", ft, [1, "h", "l", "d"]),
            ]
            nodes += [
                helper.make_node("Pad", [f"batch.{i}", "grow_pads"], [f"bp.{i}"]),
                helper.make_node("Pad", [f"new.{i}", "new_pads"], [f"np.{i}"]),
                helper.make_node("Concat", [f"bp.{i}", f"np.{i}"], [f"out.{i}"], axis=0),
            ]
            outputs.append(helper.make_tensor_value_info(f"out.{i}", ft, ["b1", "h", "w1", "d"]))
        graph = helper.make_graph(nodes, "kv_join", inputs, outputs)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)

    @staticmethod
    def _keep_graph(n: int, ft: int) -> Any:
        """``out_i = batch_i[rows, :, first:, :]``."""
        nodes, outputs = [], []
        inputs = [
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["r"]),
            helper.make_tensor_value_info("first", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("end", TensorProto.INT64, [1]),
        ]
        axes = helper.make_tensor("axis2", TensorProto.INT64, [1], [2])
        for i in range(n):
            inputs.append(helper.make_tensor_value_info(f"batch.{i}", ft, ["b", "h", "w", "d"]))
            nodes += [
                helper.make_node("Gather", [f"batch.{i}", "rows"], [f"g.{i}"], axis=0),
                helper.make_node("Slice", [f"g.{i}", "first", "end", "axis2"], [f"out.{i}"]),
            ]
            outputs.append(helper.make_tensor_value_info(f"out.{i}", ft, ["r", "h", "w1", "d"]))
        graph = helper.make_graph(nodes, "kv_keep", inputs, outputs, [axes])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)

    def _flatten(self, kv: Sequence[DeviceKV]) -> list[Any]:
        flat = [t for pair in kv for t in pair]
        if len(flat) != self.n:
            raise ValueError(f"expected {self.n // 2} layers, got {len(kv)}")
        return flat

    def _run(self, session: ort.InferenceSession, io: ort.IOBinding) -> list[DeviceKV]:
        for i in range(self.n):
            io.bind_output(f"out.{i}", self.device, self.device_id)
        session.run_with_iobinding(io)
        outs = [DeviceTensor(v) for v in io.get_outputs()]
        return [(outs[2 * i], outs[2 * i + 1]) for i in range(self.n // 2)]

    def join(self, batch: Sequence[DeviceKV], grow: int, new: Sequence[DeviceKV], pad: int) -> list[DeviceKV]:
        """Left-pad the batch by ``grow`` columns and ``new`` (one row) by ``pad``, then stack ``new`` below."""
        io = self._join.io_binding()
        io.bind_cpu_input("grow_pads", np.array([0, 0, grow, 0, 0, 0, 0, 0], np.int64))
        io.bind_cpu_input("new_pads", np.array([0, 0, pad, 0, 0, 0, 0, 0], np.int64))
        for i, (b, nw) in enumerate(zip(self._flatten(batch), self._flatten(new), strict=True)):
            _bind_input(io, f"batch.{i}", b)
            _bind_input(io, f"new.{i}", nw)
        return self._run(self._join, io)

    def keep(self, batch: Sequence[DeviceKV], rows: Sequence[int], first: int) -> list[DeviceKV]:
        """Only ``rows``, without the leading ``first`` columns."""
        io = self._keep.io_binding()
        io.bind_cpu_input("rows", np.asarray(rows, np.int64))
        io.bind_cpu_input("first", np.array([first], np.int64))
        io.bind_cpu_input("end", np.array([np.iinfo(np.int64).max], np.int64))
        for i, b in enumerate(self._flatten(batch)):
            _bind_input(io, f"batch.{i}", b)
        return self._run(self._keep, io)


class DeviceModel:
    """A :class:`LoadedModel` run with IO binding; ``forward`` keeps the KV cache on the device.

    Everything else (tokenizer, chat template, config, EOS ids) is the wrapped model's.
    """

    def __init__(self, loaded: LoadedModel, device: str = "cuda", device_id: int = 0) -> None:
        self.loaded = loaded
        self.session = loaded.session
        self.device, self.device_id = device, device_id
        self.num_layers, self.num_kv_heads = loaded.num_layers, loaded.num_kv_heads
        self.head_dim, self.vocab_size = loaded.head_dim, loaded.vocab_size
        self.eos_token_ids, self.pad_token_id = loaded.eos_token_ids, loaded.pad_token_id
        self.max_context, self.kv_dtype, self.config = loaded.max_context, loaded.kv_dtype, loaded.config
        float_type = TensorProto.FLOAT16 if self.kv_dtype == np.float16 else TensorProto.FLOAT
        chosen: list[Any] = ["CPUExecutionProvider"]
        if device == "cuda":
            chosen.insert(0, ("CUDAExecutionProvider", {"device_id": str(device_id)}))
        self.kv_ops = DeviceKVOps(2 * self.num_layers, float_type, chosen, device, device_id)
        self._argmax = _session(self._argmax_graph(float_type), chosen)
        self._present = [f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    @staticmethod
    def _argmax_graph(ft: int) -> Any:
        graph = helper.make_graph(
            [helper.make_node("ArgMax", ["logits"], ["ids"], axis=-1, keepdims=0)], "greedy",
            [helper.make_tensor_value_info("logits", ft, ["b", "v"])],
            [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b"])],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def empty_past(self, batch: int) -> list[DeviceKV]:
        """Zero-length host arrays: the first call binds them as (empty) inputs."""
        shape = (batch, self.num_kv_heads, 0, self.head_dim)
        return [(np.zeros(shape, self.kv_dtype), np.zeros(shape, self.kv_dtype)) for _ in range(self.num_layers)]

    def _step(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
        past: Sequence[DeviceKV], logits_on_device: bool,
    ) -> tuple[Any, list[DeviceKV]]:
        if len(past) != self.num_layers:
            raise ValueError(f"past has {len(past)} layers, model has {self.num_layers}")
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, dtype=np.int64))
        io.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        for i, (k, v) in enumerate(past):
            _bind_input(io, f"past_key_values.{i}.key", k)
            _bind_input(io, f"past_key_values.{i}.value", v)
        io.bind_output("logits", self.device if logits_on_device else "cpu", self.device_id if logits_on_device else 0)
        for name in self._present:
            io.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(io)
        outs = io.get_outputs()
        present = [(DeviceTensor(outs[1 + 2 * i]), DeviceTensor(outs[2 + 2 * i])) for i in range(self.num_layers)]
        return outs[0], present

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
        past: Sequence[DeviceKV],
    ) -> tuple[np.ndarray, list[DeviceKV]]:
        """One step: float32 last-position ``logits`` [batch, vocab] on the host, ``present`` on the device."""
        logits, present = self._step(input_ids, attention_mask, position_ids, past, logits_on_device=False)
        return logits.numpy().astype(np.float32, copy=False), present

    def forward_greedy(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
        past: Sequence[DeviceKV],
    ) -> tuple[np.ndarray, list[DeviceKV]]:
        """One step returning only the greedy next token per row (int64 [batch]): logits stay on the device."""
        logits, present = self._step(input_ids, attention_mask, position_ids, past, logits_on_device=True)
        io = self._argmax.io_binding()
        io.bind_ortvalue_input("logits", logits)
        io.bind_output("ids", "cpu")
        self._argmax.run_with_iobinding(io)
        return io.get_outputs()[0].numpy(), present

    # ---- the rest of the model's surface, delegated ---------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.loaded.encode(text)

    def encode_chat(self, messages: Sequence[Any], add_generation_prompt: bool = True) -> list[int]:
        return self.loaded.encode_chat(messages, add_generation_prompt)

    def render_chat(self, messages: Sequence[Any], add_generation_prompt: bool = True) -> str:
        return self.loaded.render_chat(messages, add_generation_prompt)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.loaded.decode(ids, skip_special_tokens)


def load_device_model(
    model_dir: Path, variant: str = "fp16", device: str = "cuda", device_id: int = 0, threads: int = 0
) -> DeviceModel:
    """Load a built variant on ``device`` (``cuda``: CUDA EP, needs onnxruntime-gpu; ``cpu``: for tests)."""
    loaded = load_model(model_dir, variant=variant, threads=threads, device="cuda" if device == "cuda" else "cpu")
    return DeviceModel(loaded, device=device, device_id=device_id)
