"""``TensorRTRuntime``: one ``EngineRunner`` per level; an engine holds no metadata, so it comes from beside it."""

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
from hjepa.inference.artifacts.metadata import (
    MANIFEST_NAME,
    RuntimeSourceError,
    RuntimeUnavailableError,
    decode_props,
    metadata_from_levels,
    read_manifest,
)
from hjepa.inference.runtimes.runtime import RUNTIMES, Runtime
from hjepa.inference.runtimes.tensorrt_engine import EngineRunner


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
    """The CUDA device, or RuntimeUnavailableError."""
    if not torch.cuda.is_available():
        raise RuntimeUnavailableError(
            "a TensorRT engine needs an NVIDIA GPU with CUDA, but torch.cuda.is_available() is False here; serve the "
            ".onnx export with onnxruntime instead"
        )
    try:
        resolved = resolve_device(device)  # auto -> cuda: CUDA was just found
    except DeviceUnavailableError as exc:
        raise RuntimeUnavailableError(str(exc)) from None
    if resolved.type != "cuda":
        raise RuntimeUnavailableError(f"TensorRT engines run on CUDA devices only, not {device!r}")
    return resolved


def tensorrt_usable(device: str = "auto") -> bool:
    """TensorRT and CUDA present: ``open_runtime`` then prefers engines."""
    if device == "cpu":
        return False
    try:
        import_tensorrt()
        cuda_device(device)
    except RuntimeUnavailableError:
        return False
    return True


@RUNTIMES.register("tensorrt")
class TensorRTRuntime(Runtime):
    """One ``EngineRunner`` (deserialized engine and execution context) per served level."""

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
        # a bad engine is the user's error; a failed run is not
        self.runners = {
            level: EngineRunner(trt, path, device=self.device, label=f"level {level}",
                                source_error=RuntimeSourceError, run_error=RuntimeError)
            for level, path in sorted(files.items())
        }
        self.source = source or str(next(iter(files.values())))
        self.metadata = metadata_from_levels(per_level_metadata, self.source)
        self.config = _config_or_none(config)
        self.identity = hashlib.sha256("".join(_sha256(p) for p in files.values()).encode()).hexdigest()
        # profile 0's largest batch bounds every chunk
        self.max_batch = max(1, min(runner.max_batch for runner in self.runners.values()))
        self.backend = "tensorrt"

    usable = staticmethod(tensorrt_usable)

    @staticmethod
    def has_engines(directory: Path) -> bool:
        """The manifest lists an engine that exists."""
        try:
            manifest = read_manifest(directory)
        except RuntimeSourceError:
            return False
        return any(entry["engine"] is not None and entry["engine"].is_file() for entry in manifest.files.values())

    @classmethod
    def open(cls, path: Path, device: str = "auto") -> TensorRTRuntime:
        """An ``.engine`` file or an export directory with engines."""
        import_tensorrt()  # what is missing here is what a user needs to hear first
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

    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        runner = self.runners[level]
        # an engine that normalises inside takes the uint8 pixels
        tokens, pooled = runner(self.to_pixels(batch) if runner.input_dtype == torch.uint8 else batch)
        return tokens, pooled


def engine_metadata(engine_path: Path) -> dict[str, Any]:
    """From the first of: sidecar ``level{K}.engine.json``, ``manifest.json``, the ``.onnx`` beside it."""
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
    if (engine_path.parent / MANIFEST_NAME).is_file():
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
    from hjepa.inference.artifacts.hashing import file_sha256

    return file_sha256(path)


def _config_or_none(config: dict[str, Any] | None) -> Any:
    from hjepa.inference.runtimes.runtime_onnx import _config_or_none as convert

    return convert(config)
