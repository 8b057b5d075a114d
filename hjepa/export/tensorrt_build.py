"""TensorRT engines from the exported ONNX file, written against both the TensorRT 10 and 11 Python APIs.

- Precision: TensorRT 11 removed weak typing (``BuilderFlag.FP16`` and the other precision flags); every network is
  strongly typed and takes its types from the ONNX graph, so ``--half`` works because the ONNX file itself is
  float16 (with float32 LayerNorms). TensorRT 10 builds a weakly typed network and gets ``BuilderFlag.FP16``.
- Shapes: one optimization profile over the batch axis, ``min / opt / max`` from ``cfg.export.profile_batches``
  (all equal to ``--batch`` for a static export).
- Timing cache: tactic timings are read from and written back to a cache file, so a rebuild on the same GPU and
  TensorRT version takes a fraction of the first build's time.
- Without the ``tensorrt`` package or without a CUDA GPU, ``require_tensorrt`` says which is missing.

The runtime side (``EngineRunner``, shared by export verification, the inference benchmark and the serving
runtime) uses PyTorch CUDA tensors as buffers, so no pycuda / cuda-python is needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from hjepa.export.errors import ExportError
from hjepa.export.onnx_export import INPUT_NAME
from hjepa.inference.runtimes.tensorrt_engine import EngineRunner as _EngineRunner

INSTALL_HINT = "install it with pip install tensorrt, or pip install 'hjepa[gpu]'"


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU (a function of its own so tests can stand in a GPU for this module only)."""
    return torch.cuda.is_available()


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or ``ExportError`` naming what is missing (the package, the GPU, or both)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        trt = None
    has_gpu = cuda_available()
    if trt is None and not has_gpu:
        raise ExportError(
            "--format trt needs TensorRT and an NVIDIA GPU, and this machine has neither: TensorRT is not installed "
            f"({INSTALL_HINT}) and torch.cuda.is_available() is False; use --format onnx here"
        )
    if trt is None:
        raise ExportError(f"--format trt needs TensorRT, which is not installed: {INSTALL_HINT}")
    if not has_gpu:
        raise ExportError(
            "--format trt needs an NVIDIA GPU with CUDA, but torch.cuda.is_available() is False (TensorRT is "
            "installed); build the engine on the GPU that will run it, with a CUDA build of PyTorch"
        )
    return trt


def api_major(trt: ModuleType) -> int:
    """The major version of the TensorRT Python API (10, 11, ...)."""
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        raise ExportError(f"cannot read the TensorRT version from {trt.__version__!r}") from None


def gpu_info() -> dict[str, Any]:
    """Name and compute capability of the current CUDA device (engines only run on the kind they were built for)."""
    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def build_engine(
    trt: ModuleType,
    onnx_path: Path,
    engine_path: Path,
    input_shape: Sequence[int],
    profile_batches: Sequence[int],
    fp16: bool,
    timing_cache: Path,
    workspace_bytes: int | None = None,
) -> dict[str, Any]:
    """Build and write a serialized engine; returns the facts for the sidecar JSON.

    ``input_shape`` is one image (``[3, S, S]`` or ``[S, S, 3]``); ``profile_batches`` is ``(min, opt, max)``.
    """
    low, opt, high = (int(b) for b in profile_batches)
    if not 1 <= low <= opt <= high:
        raise ExportError(f"profile batches must satisfy 1 <= min <= opt <= max, got {list(profile_batches)}")
    major = api_major(trt)
    strongly_typed = major >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11 networks are always strongly typed (its STRONGLY_TYPED creation flag is ignored); 10 stays weakly
    # typed so that BuilderFlag.FP16 lets it pick fp16 kernels.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {errors or 'unknown error'}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shapes = {name: [batch, *input_shape] for name, batch in (("min", low), ("opt", opt), ("max", high))}
    profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path.name} (see its log)")
    with engine_path.open("wb") as handle:
        handle.write(serialized)
    with timing_cache.open("wb") as handle:
        handle.write(config.get_timing_cache().serialize())
    return {
        "tensorrt_version": str(trt.__version__),
        "api_major": major,
        "strongly_typed": strongly_typed,
        "fp16": bool(fp16),
        "fp16_from": ("onnx graph" if strongly_typed else "BuilderFlag.FP16") if fp16 else None,
        "profile": {"input": INPUT_NAME, **shapes},
        "timing_cache": timing_cache.name,
        **gpu_info(),
    }


class EngineRunner(_EngineRunner):
    """The runtimes' ``EngineRunner`` reporting problems as ``ExportError`` (export verification)."""

    def __init__(self, trt: ModuleType, engine_path: Path, **kwargs: Any) -> None:
        kwargs.setdefault("source_error", ExportError)
        kwargs.setdefault("run_error", ExportError)
        super().__init__(trt, engine_path, **kwargs)
