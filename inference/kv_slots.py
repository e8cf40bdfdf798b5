"""Fixed KV slots: the batch's KV cache as one buffer per layer that every step updates in place.

The left-padded batch cache of :class:`inference.scheduler.BatchScheduler` changes shape every step
(one more column; rows join and leave), and ONNX Runtime returns a new ``present`` each time, a copy
of the whole cache. Here a ``-slots`` model (inference.onnx_graph, "Fixed KV slots") runs
GroupQueryAttention with its past and present bound to the same buffer of ``capacity`` columns:

* slot ``i`` holds row ``i`` of the running batch from column 0; a decode step writes one column per
  row, in place, and attends to each row's own length (``seqlens_k``);
* one more slot, the *staging* slot, takes a prompt's prefill while the batch decodes; when the prompt
  is done it is copied into the next free slot, which is the only copy a sequence's KV ever gets;
* a row that leaves is replaced by the last row (one copy), so the running rows are always slots
  ``0..n-1`` and a step runs on exactly those;
* with ``graphs`` (CUDA only) a decode step always runs all ``slots`` rows with the same inputs and
  outputs at the same addresses, which is what ONNX Runtime needs to capture it as a CUDA graph and
  replay it; free slots compute a token nobody reads.

:class:`HostSlots` keeps the buffers in numpy arrays (CPU execution provider); :class:`DeviceSlots`
keeps them on the model's CUDA device as ``OrtValue`` and copies slots with a one-node graph there.
Both bind buffers by address (``IOBinding.bind_input(..., buffer_ptr)``), so a row range is a view.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from inference.scheduler import KV, BatchScheduler, _Sequence

log = logging.getLogger(__name__)

GRAPH_DECODE = "1"  # the run option gpu_graph_id of the captured decode step
NO_GRAPH = "-1"  # a run that is neither captured nor replayed (prefill, copies)


def is_slot_model(model: Any) -> bool:
    config = getattr(model, "config", None) or {}
    return config.get("kv_layout") == "slots"


class HostSlots:
    """``slots`` decode slots and one staging slot of ``capacity`` columns, in host memory."""

    graphs = False
    device, device_id = "cpu", 0
    run_options: ort.RunOptions | None = None  # of a step that is not a captured decode

    def __init__(self, model: Any, slots: int, capacity: int) -> None:
        self.model, self.session = model, model.session
        self.slots, self.capacity = slots, capacity
        self.staging = slots
        self.dtype = np.dtype(model.kv_dtype)
        self._shape = [model.num_kv_heads, capacity, model.head_dim]
        self.row_bytes = int(np.prod(self._shape)) * self.dtype.itemsize
        self._total = np.array(capacity, np.int32)
        self.buffers = self._allocate([slots + 1, *self._shape])

    def _allocate(self, shape: list[int]) -> list[Any]:
        return [(np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)) for _ in range(self.model.num_layers)]

    # ---- addresses --------------------------------------------------------------------------------
    def _pointers(self) -> list[tuple[int, int]]:
        return [(k.ctypes.data, v.ctypes.data) for k, v in self.buffers]

    def _bind_rows(self, io: Any, first: int, count: int) -> None:
        element = self.dtype.type
        shape = [count, *self._shape]
        for i, (k, v) in enumerate(self._pointers()):
            for kind, base in (("key", k), ("value", v)):
                at = base + first * self.row_bytes
                io.bind_input(f"past_key_values.{i}.{kind}", self.device, self.device_id, element, shape, at)
                io.bind_output(f"present.{i}.{kind}", self.device, self.device_id, element, shape, at)

    # ---- steps ------------------------------------------------------------------------------------
    def forward(self, first: int, input_ids: np.ndarray, position_ids: np.ndarray,
                lengths: np.ndarray) -> np.ndarray:
        """Run rows ``first..first+n-1`` (``n`` = len(input_ids)) holding ``lengths`` columns each; returns
        their float32 logits. The new columns are written into the slots."""
        n, seq = input_ids.shape
        io = self.session.io_binding()
        io.bind_output("logits", "cpu")  # first, so it is output 0
        io.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, np.int64))
        io.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, np.int64))
        io.bind_cpu_input("seqlens_k", (np.asarray(lengths, np.int64) + seq - 1).astype(np.int32))
        io.bind_cpu_input("total_sequence_length", self._total)
        self._bind_rows(io, first, n)
        self.session.run_with_iobinding(io, self.run_options)
        return io.get_outputs()[0].numpy().astype(np.float32, copy=False)

    def decode(self, input_ids: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """One token for rows ``0..n-1``; a row's length before the step is its position."""
        return self.forward(0, input_ids, position_ids, position_ids[:, 0])

    # ---- copies -----------------------------------------------------------------------------------
    def move(self, src: int, dst: int, length: int) -> None:
        for k, v in self.buffers:
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def write(self, slot: int, past: list[KV]) -> None:
        """Put a one-row cache (``[1, kv_heads, length, head_dim]`` per layer) at the start of ``slot``."""
        for (k, v), (pk, pv) in zip(self.buffers, past, strict=True):
            length = pk.shape[2]
            k[slot, :, :length] = pk[0]
            v[slot, :, :length] = pv[0]

    def read(self, slot: int, length: int) -> list[KV]:
        """A copy of ``slot``'s first ``length`` columns as a one-row cache."""
        return [(np.ascontiguousarray(k[slot:slot + 1, :, :length]), np.ascontiguousarray(v[slot:slot + 1, :, :length]))
                for k, v in self.buffers]


class DeviceSlots(HostSlots):
    """The slots in the CUDA device's memory (``device='cpu'`` runs the same code on the CPU EP, for tests).

    A decode step with ``graphs`` runs all slots with inputs and outputs bound to fixed device buffers,
    under the run option ``gpu_graph_id`` ``1``: ONNX Runtime captures it on the first run (the
    session must be created with ``enable_cuda_graph``) and replays it afterwards. Prefill and copies
    run outside the graph. The prefix cache, which keeps host arrays, is off here (as for
    inference.gpu_runner's device cache).
    """

    def __init__(self, model: Any, slots: int, capacity: int, device: str = "cuda", device_id: int = 0,
                 graphs: bool = False) -> None:
        self.device, self.device_id, self.graphs = device, device_id, graphs
        super().__init__(model, slots, capacity)
        providers: list[Any] = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": str(device_id)}))
        float_type = TensorProto.FLOAT16 if self.dtype == np.float16 else TensorProto.FLOAT
        copy = helper.make_graph([helper.make_node("Identity", ["src"], ["dst"])], "slot_copy",
                                 [helper.make_tensor_value_info("src", float_type, ["r", "h", "c", "d"])],
                                 [helper.make_tensor_value_info("dst", float_type, ["r", "h", "c", "d"])])
        self._copy = ort.InferenceSession(
            helper.make_model(copy, opset_imports=[helper.make_opsetid("", 21)], ir_version=10).SerializeToString(),
            providers=providers)
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("gpu_graph_id", NO_GRAPH)
        self._graph = ort.RunOptions()
        self._graph.add_run_config_entry("gpu_graph_id", GRAPH_DECODE)
        self._fixed: dict[str, Any] | None = None  # the graph's input and output buffers, made on first use

    def _allocate(self, shape: list[int]) -> list[Any]:
        layers = self.model.num_layers
        if self.device == "cpu":  # an OrtValue wraps a CPU array's memory: one array per buffer, kept alive
            self._host = [np.zeros(shape, self.dtype) for _ in range(2 * layers)]
            values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._host]
        else:
            zeros = np.zeros(shape, self.dtype)
            values = [ort.OrtValue.ortvalue_from_numpy(zeros, self.device, self.device_id) for _ in range(2 * layers)]
        return list(zip(values[::2], values[1::2], strict=True))

    def _pointers(self) -> list[tuple[int, int]]:
        return [(k.data_ptr(), v.data_ptr()) for k, v in self.buffers]

    def decode(self, input_ids: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        if not self.graphs:
            return super().decode(input_ids, position_ids)
        n = len(input_ids)
        ids = np.zeros((self.slots, 1), np.int64)
        pos = np.zeros((self.slots, 1), np.int64)
        ids[:n], pos[:n] = input_ids, position_ids
        seqlens = pos[:, 0].astype(np.int32)  # length before the step + 1 new column - 1
        if self._fixed is None:
            d, i = self.device, self.device_id
            vocab = int(self.model.vocab_size)
            self._fixed = {
                "input_ids": ort.OrtValue.ortvalue_from_numpy(ids, d, i),
                "position_ids": ort.OrtValue.ortvalue_from_numpy(pos, d, i),
                "seqlens_k": ort.OrtValue.ortvalue_from_numpy(seqlens, d, i),
                "total_sequence_length": ort.OrtValue.ortvalue_from_numpy(self._total),  # read on the host
                "logits": ort.OrtValue.ortvalue_from_shape_and_type([self.slots, vocab], self.dtype.type, d, i),
            }
            io = self.session.io_binding()
            for name in ("input_ids", "position_ids", "seqlens_k", "total_sequence_length"):
                io.bind_ortvalue_input(name, self._fixed[name])
            io.bind_ortvalue_output("logits", self._fixed["logits"])
            self._bind_rows(io, 0, self.slots)
            self._fixed["io"] = io
        else:
            self._fixed["input_ids"].update_inplace(ids)
            self._fixed["position_ids"].update_inplace(pos)
            self._fixed["seqlens_k"].update_inplace(seqlens)
        self.session.run_with_iobinding(self._fixed["io"], self._graph)
        return self._fixed["logits"].numpy()[:n].astype(np.float32, copy=False)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy whole slot rows on the device (the unused columns come along; no host round trip)."""
        shape = [1, *self._shape]
        element = self.dtype.type
        io = self._copy.io_binding()
        for k, v in self._pointers():
            for base in (k, v):
                io.bind_input("src", self.device, self.device_id, element, shape, base + src * self.row_bytes)
                io.bind_output("dst", self.device, self.device_id, element, shape, base + dst * self.row_bytes)
                self._copy.run_with_iobinding(io)

    def write(self, slot: int, past: list[KV]) -> None:
        raise NotImplementedError("the prefix cache is off for device-resident slots")

    def read(self, slot: int, length: int) -> list[KV]:
        raise NotImplementedError("the prefix cache is off for device-resident slots")


class SlotScheduler(BatchScheduler):
    """:class:`BatchScheduler` over fixed KV slots (module docstring): same admission, prefill slices,
    prefix cache (host slots only) and streaming; only where the KV lives differs."""

    def __init__(self, model: Any, *, kv_capacity: int = 2048, graphs: bool = False,
                 device: str | None = None, **kwargs: Any) -> None:
        max_batch = int(kwargs.get("max_batch", 16))
        capacity = min(int(kv_capacity), int(model.max_context))
        on_device = device if device is not None else (
            "cuda" if "CUDAExecutionProvider" in getattr(model, "providers", []) else None)
        self.slots: HostSlots = DeviceSlots(model, max_batch, capacity, on_device, graphs=graphs) \
            if on_device else HostSlots(model, max_batch, capacity)
        if on_device:
            kwargs["prefix_cache"] = None
        super().__init__(model, **kwargs)
        self._lengths: list[int] = []  # columns each running row holds, in row (= slot) order
        self._staged = 0  # columns the staging slot holds

    @property
    def max_context(self) -> int:
        return self.slots.capacity

    def _start_prefill(self, seq: _Sequence) -> None:
        self._staged = 0
        hit = self.prefix_cache.lookup(seq.prompt) if self.prefix_cache is not None else None
        if hit is not None:
            self.slots.write(self.slots.staging, hit.past)
            seq.prefilled = self._staged = hit.tokens

    def _prefill_forward(self, seq: _Sequence, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        logits = self.slots.forward(self.slots.staging, ids, pos, np.array([self._staged]))
        self._staged += ids.shape[1]
        return logits

    def _prefilled_kv(self, seq: _Sequence) -> list[KV]:
        return self.slots.read(self.slots.staging, self._staged)

    def _join_batch(self, seq: _Sequence) -> None:
        slot = len(self._rows)
        self.slots.move(self.slots.staging, slot, self._staged)
        self._rows.append(seq)
        self._lengths.append(self._staged)

    def _decode_forward(self, rows: list[_Sequence]) -> np.ndarray:
        ids = np.asarray([[s.next_token] for s in rows], dtype=np.int64)
        pos = np.asarray(self._lengths, dtype=np.int64)[:, None]
        logits = self.slots.decode(ids, pos)
        self._lengths = [n + 1 for n in self._lengths]
        return logits

    def _row_kv(self, i: int) -> tuple[int, list[KV]]:
        return self._lengths[i], self.slots.read(i, self._lengths[i])

    def _remove_rows(self, leaving: list[_Sequence]) -> None:
        gone = sorted((i for i, s in enumerate(self._rows) if s in leaving), reverse=True)
        for i in gone:  # highest first: the last row is never one that still has to leave
            last = len(self._rows) - 1
            if i != last:
                self.slots.move(last, i, self._lengths[last])
                self._rows[i], self._lengths[i] = self._rows[last], self._lengths[last]
            self._rows.pop()
            self._lengths.pop()

    def _reset_batch(self) -> None:
        self._rows, self._lengths = [], []
