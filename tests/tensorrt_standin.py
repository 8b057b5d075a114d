"""A stand-in ``tensorrt`` module for the runtime half of the TensorRT 10/11 API, shared by the export and serve tests.

There is no GPU here, so an "engine" is the ONNX model it was built from: a serialized engine is ``ENGINE-<version>``,
a newline and the ONNX bytes, and executing it runs onnxruntime on the buffers found through the raw addresses the
runner bound (CPU tensors in these tests). Deserialization, tensor names, dtypes, shapes, binding and the copies out
therefore go through the real ``EngineRunner``; only the kernels are onnxruntime's.
"""

from __future__ import annotations

import ctypes
import enum
import types

import numpy as np

DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT8 INT32 INT64 UINT8 BOOL FP8")
TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
_FROM_ORT = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(uint8)": DataType.UINT8}
_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.UINT8: np.uint8}


def engine_bytes(onnx_bytes: bytes, version: str) -> bytes:
    """A serialized stand-in engine: what the stand-in builder writes and the stand-in runtime of ``version`` reads."""
    return b"ENGINE-" + version.encode() + b"\n" + onnx_bytes


class Engine:
    """``ICudaEngine``: the ONNX model's I/O tensors, with one optimization profile of batches 1..max_batch."""

    def __init__(self, onnx_bytes: bytes, max_batch: int, runs: list[int]) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.modes = {t.name: TensorIOMode.INPUT for t in inputs} | {t.name: TensorIOMode.OUTPUT for t in outputs}
        self.dtypes = {t.name: _FROM_ORT[t.type] for t in (*inputs, *outputs)}
        self.image_shape = tuple(inputs[0].shape[1:])
        self.num_io_tensors = len(self.modes)
        self.max_batch, self.runs = max_batch, runs

    def get_tensor_name(self, index: int) -> str:
        return list(self.modes)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.modes[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [(1, *self.image_shape), (self.max_batch, *self.image_shape), (self.max_batch, *self.image_shape)]

    def create_execution_context(self) -> Context:
        return Context(self)


class Context:
    """``IExecutionContext``: refuses batches outside the profile and runs only with every I/O tensor bound."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if not 1 <= shape[0] <= self.engine.max_batch:
            return False
        self.shapes[name] = tuple(shape)
        # Shape inference, as TensorRT does it when the input shape is set: here by running zeros once.
        zeros = np.zeros(shape, _NUMPY[self.engine.dtypes[name]])
        outputs = [n for n, mode in self.engine.modes.items() if mode is TensorIOMode.OUTPUT]
        for output, value in zip(outputs, self.engine.session.run(outputs, {name: zeros}), strict=True):
            self.shapes[output] = value.shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if set(self.addresses) != set(self.engine.modes) or set(self.shapes) != set(self.engine.modes):
            return False  # TensorRT fails an execution with an unbound tensor or an unset input shape
        modes = self.engine.modes
        feed = {name: self._view(name).copy() for name, mode in modes.items() if mode is TensorIOMode.INPUT}
        outputs = [name for name, mode in modes.items() if mode is TensorIOMode.OUTPUT]
        for name, value in zip(outputs, self.engine.session.run(outputs, feed), strict=True):
            self._view(name)[...] = value
        self.engine.runs.append(self.shapes[next(iter(feed))][0])
        return True

    def _view(self, name: str) -> np.ndarray:
        """The bound buffer of ``name`` as numpy, read through its raw address with the engine's dtype for it."""
        dtype, shape = np.dtype(_NUMPY[self.engine.dtypes[name]]), self.shapes[name]
        buffer = (ctypes.c_byte * (int(np.prod(shape)) * dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(buffer, dtype).reshape(shape)


def tensorrt_module(
    version: str = "10.0-standin", max_batch: int = 4, runs: list[int] | None = None
) -> types.ModuleType:
    """A ``tensorrt`` module whose runtime deserializes engines of its own ``version`` only (as TensorRT does);
    each execution appends its batch size to ``runs``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.DataType, trt.TensorIOMode = DataType, TensorIOMode
    executed = [] if runs is None else runs

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
            header, _, onnx_bytes = bytes(blob).partition(b"\n")
            return Engine(onnx_bytes, max_batch, executed) if header == b"ENGINE-" + version.encode() else None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt
