"""``TensorRTRuntime``: serialized TensorRT engines run through the TensorRT 10/11 tensor-address API.

Buffers are torch CUDA tensors (no pycuda): inputs are copied to the device, ``set_input_shape`` fixes the batch,
``set_tensor_address`` binds every I/O tensor, ``execute_async_v3`` runs on torch's current stream. A serialized
engine has no room for metadata; it is read from its sidecar ``level{K}.engine.json``, the export's ``manifest.json``
or the ``.onnx`` file beside it. Without the ``tensorrt`` package or without CUDA, opening an engine raises
``RuntimeUnavailableError`` saying which one is missing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from hjepa.device import DeviceUnavailableError, resolve_device
from hjepa.serve.metadata import (
    RuntimeSourceError,
    RuntimeUnavailableError,
    decode_props,
    metadata_from_levels,
    read_manifest,
)
from hjepa.serve.runtime import Runtime

INPUT_NAME = "images"
OUTPUT_NAMES = ("tokens", "pooled")
# TensorRT DataType member name -> torch dtype of the buffer bound to it.
TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
}


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or RuntimeUnavailableError saying how to get it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise RuntimeUnavailableError(
            "a TensorRT engine needs the 'tensorrt' Python package (pip install tensorrt, or hjepa[gpu]) and an NVIDIA "
            "GPU; serve the .onnx export with onnxruntime instead"
        ) from None


def cuda_device(device: str) -> torch.device:
    """The CUDA device engines run on; RuntimeUnavailableError when this machine has no usable CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeUnavailableError(
            "a TensorRT engine needs an NVIDIA GPU with CUDA, but torch.cuda.is_available() is False here; serve the "
            ".onnx export with onnxruntime instead"
        )
    try:
        resolved = resolve_device(device)  # auto -> cuda here: CUDA was just found
    except DeviceUnavailableError as exc:
        raise RuntimeUnavailableError(str(exc)) from None
    if resolved.type != "cuda":
        raise RuntimeUnavailableError(f"TensorRT engines run on CUDA devices only, not {device!r}")
    return resolved


def tensorrt_usable(device: str = "auto") -> bool:
    """True when both TensorRT and CUDA are present (``open_runtime`` then prefers an export's engines)."""
    if device == "cpu":
        return False
    try:
        import_tensorrt()
        cuda_device(device)
    except RuntimeUnavailableError:
        return False
    return True


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])


class TensorRTRuntime(Runtime):
    """One deserialized engine and execution context per served level."""

    def __init__(
        self,
        files: dict[int, Path],
        per_level_metadata: dict[int, dict[str, Any]],
        device: str = "auto",
        config: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__()
        trt = import_tensorrt()
        self.device = cuda_device(device)
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.trt_runtime = trt.Runtime(self.logger)
        self.engines: dict[int, Any] = {}
        self.contexts: dict[int, Any] = {}
        max_batches = []
        for level, path in sorted(files.items()):
            engine = self.trt_runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeSourceError(
                    f"TensorRT could not deserialize {path}: not an engine, or built by another TensorRT version / GPU"
                )
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            if INPUT_NAME not in names or not set(OUTPUT_NAMES) <= set(names):
                raise RuntimeSourceError(f"{path} has tensors {names}; expected '{INPUT_NAME}', 'tokens', 'pooled'")
            self.engines[level] = engine
            self.contexts[level] = engine.create_execution_context()
            # Profile 0's largest batch bounds every chunk; a static engine reports its fixed batch here.
            max_shape = engine.get_tensor_profile_shape(INPUT_NAME, 0)[2]
            max_batches.append(int(max_shape[0]))
        self.source = source or str(next(iter(files.values())))
        self.metadata = metadata_from_levels(per_level_metadata, self.source)
        self.config = _config_or_none(config)
        self.identity = hashlib.sha256("".join(_sha256(p) for p in files.values()).encode()).hexdigest()
        self.max_batch = max(1, min(max_batches))
        self.backend = "tensorrt"

    @staticmethod
    def has_engines(directory: Path) -> bool:
        """True when an export directory's manifest lists at least one existing engine."""
        try:
            manifest = read_manifest(directory)
        except RuntimeSourceError:
            return False
        return any(entry["engine"] is not None and entry["engine"].is_file() for entry in manifest.files.values())

    @classmethod
    def open(cls, path: Path, device: str = "auto") -> TensorRTRuntime:
        """An ``.engine`` file (metadata as :func:`engine_metadata` finds it), or an export directory with engines."""
        import_tensorrt()  # what is missing on this machine is the first thing a user needs to hear
        cuda_device(device)
        if path.is_dir():
            manifest = read_manifest(path)
            files = {k: e["engine"] for k, e in manifest.files.items() if e["engine"] is not None}
            missing = [str(f) for f in files.values() if not f.is_file()]
            if not files or missing:
                raise RuntimeSourceError(
                    f"{path} has no TensorRT engines{' (missing: ' + ', '.join(missing) + ')' if missing else ''}; "
                    "build them with hjepa-export --format trt, or serve the .onnx files with onnxruntime"
                )
            metadata = {k: manifest.metadata.get(k) or engine_metadata(f) for k, f in files.items()}
            return cls(files, metadata, device, manifest.config, source=str(path))
        meta = engine_metadata(path)
        try:
            level = int(meta["level"])
        except (KeyError, TypeError, ValueError):
            raise RuntimeSourceError(f"metadata of {path} has no integer 'level'") from None
        return cls({level: path}, {level: meta}, device, source=str(path))

    def _stream(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.current_stream(self.device).cuda_stream
        return 0  # only with a stand-in tensorrt module in tests, where no stream exists

    def _torch_dtype(self, engine: Any, name: str) -> torch.dtype:
        dtype = _dtype_name(engine.get_tensor_dtype(name))
        if dtype not in TORCH_DTYPES:
            raise RuntimeSourceError(f"engine tensor {name!r} has unsupported dtype {dtype}")
        return TORCH_DTYPES[dtype]

    @torch.no_grad()
    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        engine, context = self.engines[level], self.contexts[level]
        input_dtype = self._torch_dtype(engine, INPUT_NAME)
        host = self.to_pixels(batch) if input_dtype == torch.uint8 else batch
        images = torch.from_numpy(np.ascontiguousarray(host)).to(self.device, input_dtype).contiguous()
        if not context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            raise RuntimeSourceError(f"engine for level {level} rejects input shape {tuple(images.shape)}")
        context.set_tensor_address(INPUT_NAME, images.data_ptr())
        outputs = {}
        for name in OUTPUT_NAMES:
            shape = tuple(int(v) for v in context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._torch_dtype(engine, name), device=self.device)
            context.set_tensor_address(name, outputs[name].data_ptr())
        if not context.execute_async_v3(self._stream()):
            raise RuntimeError(f"TensorRT execution failed for level {level}")
        # .cpu() waits for the stream: the copy is ordered after the engine's kernels on the same stream.
        return outputs["tokens"].float().cpu().numpy(), outputs["pooled"].float().cpu().numpy()


def engine_metadata(engine_path: Path) -> dict[str, Any]:
    """The hjepa metadata of ``level{K}.engine``, from the first place that has it: the sidecar
    ``level{K}.engine.json`` (at its top level or under ``"metadata"``), the ``manifest.json`` beside it, or the
    ``.onnx`` file it was built from. None of them -> RuntimeSourceError."""
    sidecar = engine_path.with_name(engine_path.name + ".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RuntimeSourceError(f"{sidecar} is not valid JSON ({exc})") from None
        if isinstance(data, dict):
            meta = decode_props(data.get("metadata", data))
            if "level" in meta and "grid" in meta:
                return meta
    if (engine_path.parent / "manifest.json").is_file():
        manifest = read_manifest(engine_path.parent)
        for level, entry in manifest.files.items():
            if entry["engine"] is not None and entry["engine"].name == engine_path.name:
                return manifest.metadata[level]
    onnx_path = engine_path.with_suffix(".onnx")
    if onnx_path.is_file():
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        return decode_props({prop.key: prop.value for prop in model.metadata_props})
    raise RuntimeSourceError(
        f"no metadata for {engine_path}: expected {sidecar.name} with hjepa metadata, a manifest.json listing it, "
        f"or {onnx_path.name} beside it (hjepa-export writes them)"
    )


def _sha256(path: Path) -> str:
    from hjepa.evaluation.cache import file_sha256

    return file_sha256(path)


def _config_or_none(config: dict[str, Any] | None) -> Any:
    from hjepa.serve.runtime_onnx import _config_or_none as convert

    return convert(config)
