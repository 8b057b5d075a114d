"""``EngineRunner``: a TensorRT 10/11 engine run through the tensor-address API on torch CUDA buffers (no pycuda)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from hjepa.errors import HJEPAError
from hjepa.inference.runtimes.sessions import INPUT_NAME, OUTPUT_NAMES


class EngineError(HJEPAError, RuntimeError):
    """An engine that cannot run (callers may pass their own types)."""


# by member name: one table fits TensorRT 10 and 11
TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
}


class EngineRunner:
    """``runner(inputs [B, ...]) -> [tokens [B, N_k, D], pooled [B, D]]``, numpy float32.

    ``source_error``: the engine cannot serve; ``run_error``: a run failed. ``device="cpu"`` is for test stand-ins.
    """

    def __init__(
        self,
        trt: ModuleType,
        engine_path: Path,
        *,
        device: torch.device | str = "cuda",
        label: str | None = None,
        source_error: type[Exception] = EngineError,
        run_error: type[Exception] = EngineError,
    ) -> None:
        self.device = torch.device(device)
        self.label = label or engine_path.name
        self.run_error = run_error
        self.source_error = source_error
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # must outlive its engine
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise source_error(f"TensorRT could not deserialize {engine_path}: not an engine, or built by another "
                               "TensorRT version / GPU")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or not set(OUTPUT_NAMES) <= set(names):
            raise source_error(f"{engine_path} has tensors {names}; expected '{INPUT_NAME}', 'tokens', 'pooled'")
        # TensorRT refuses to run with any output unbound
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {name: self._torch_dtype(name) for name in names}
        self.context = self.engine.create_execution_context()

    @property
    def input_dtype(self) -> torch.dtype:
        """float32 (NCHW), or uint8 for an engine that normalises NHWC pixels itself."""
        return self.dtypes[INPUT_NAME]

    @property
    def max_batch(self) -> int:
        """Profile 0's largest batch (a static engine's fixed one)."""
        return int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])

    def __call__(self, inputs: np.ndarray) -> list[np.ndarray]:
        images = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device, self.input_dtype)
        if not self.context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            raise self.source_error(f"engine for {self.label} rejects input shape {tuple(images.shape)}")
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        buffers = {}
        for name in self.outputs:
            shape = tuple(int(v) for v in self.context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        if not self.context.execute_async_v3(self._stream()):
            raise self.run_error(f"TensorRT execution failed for {self.label}")
        # .cpu() on the same stream waits for the engine
        return [buffers[name].float().cpu().numpy() for name in OUTPUT_NAMES]

    def _stream(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.current_stream(self.device).cuda_stream
        return 0  # test stand-ins have no stream

    def _torch_dtype(self, name: str) -> torch.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        dtype_name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
        if dtype_name not in TORCH_DTYPES:
            raise self.source_error(f"engine tensor {name!r} has unsupported dtype {dtype_name}")
        return TORCH_DTYPES[dtype_name]
