"""``EngineRunner``: one deserialized TensorRT engine and its execution context, through the TensorRT 10/11
tensor-address API. Shared by export verification, the inference benchmark and the serving runtime; buffers are
PyTorch CUDA tensors, so no pycuda / cuda-python is needed. Building engines is ``hjepa.export.tensorrt_build``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from hjepa.errors import HJEPAError
from hjepa.inference.runtimes.sessions import INPUT_NAME, OUTPUT_NAMES


class EngineError(HJEPAError, RuntimeError):
    """An engine that cannot run (the default error types of :class:`EngineRunner`; callers pass their own)."""


# By member name, so one table fits TensorRT 10 and 11.
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
    """One deserialized engine and its execution context: ``runner(inputs np [B, ...]) -> [tokens, pooled]``.

    Inputs are cast to the engine's input type (float32 ``[B, 3, S, S]`` or uint8 ``[B, S, S, 3]``); outputs come
    back as numpy float32 ``[B, N_k, D]`` and ``[B, D]``. Export verification and the benchmark use the defaults; the
    serving runtime passes its own ``device`` (``cuda:N``), a ``label`` such as ``"level 0"`` for messages, and its
    own error types: ``source_error`` for an engine that cannot serve (unreadable, wrong tensors or types, a batch
    outside its profile), ``run_error`` for an execution that fails. ``device="cpu"`` exists only for stand-in
    ``tensorrt`` modules in tests, which read the bound buffers on the host.
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
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # held so it outlives the engine it made
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise source_error(f"TensorRT could not deserialize {engine_path}: not an engine, or built by another "
                               "TensorRT version / GPU")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or not set(OUTPUT_NAMES) <= set(names):
            raise source_error(f"{engine_path} has tensors {names}; expected '{INPUT_NAME}', 'tokens', 'pooled'")
        # TensorRT refuses to run with any output unbound.
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {name: self._torch_dtype(name) for name in names}
        self.context = self.engine.create_execution_context()

    @property
    def input_dtype(self) -> torch.dtype:
        """torch.float32 for a float NCHW engine, torch.uint8 for one that normalises uint8 NHWC pixels itself."""
        return self.dtypes[INPUT_NAME]

    @property
    def max_batch(self) -> int:
        """The largest batch of optimization profile 0 (a static engine reports its fixed batch here)."""
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
        # .cpu() on the same stream waits for the engine.
        return [buffers[name].float().cpu().numpy() for name in OUTPUT_NAMES]

    def _stream(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.current_stream(self.device).cuda_stream
        return 0  # only with a stand-in tensorrt module in tests, where no stream exists

    def _torch_dtype(self, name: str) -> torch.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        dtype_name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
        if dtype_name not in TORCH_DTYPES:
            raise self.source_error(f"engine tensor {name!r} has unsupported dtype {dtype_name}")
        return TORCH_DTYPES[dtype_name]
