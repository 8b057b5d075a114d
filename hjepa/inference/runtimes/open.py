"""``open_runtime(source)``: what a source is, and the ``RUNTIMES`` entry that serves it."""

from __future__ import annotations

from pathlib import Path

from hjepa.device import check_device_name
from hjepa.errors import OptionError
from hjepa.inference.artifacts.artifact import is_artifact
from hjepa.inference.artifacts.metadata import MANIFEST_NAME, RuntimeSourceError, read_manifest
from hjepa.inference.runtimes import runtime_onnx, runtime_tensorrt, runtime_torch  # noqa: F401  (they register)
from hjepa.inference.runtimes.runtime import RUNTIMES, Runtime

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime:cpu", "onnxruntime:cuda", "onnxruntime:tensorrt", "tensorrt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def parse_backend(backend: str) -> tuple[str, str | None]:
    """``"onnxruntime:cuda"`` -> ``("onnxruntime", "cuda")``."""
    if backend not in BACKENDS:
        raise OptionError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    family, _, provider = backend.partition(":")
    return family, provider or None


def source_kind(path: Path) -> str:
    """``"checkpoint"``, ``"artifact"``, ``"onnx"``, ``"export"`` (a manifest directory) or ``"engine"``."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; expected a checkpoint (.pt or run directory), an .onnx file, an export "
            "directory with manifest.json, or a TensorRT .engine"
        )
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file() and not (is_artifact(path) and not _lists_levels(path)):
            return "export"
        if is_artifact(path):
            return "artifact"
        if (path / "checkpoints" / "last.pt").is_file() or (path / "last.pt").is_file():
            return "checkpoint"
        raise RuntimeSourceError(
            f"directory {path} holds neither manifest.json (an export) nor checkpoints/last.pt (a training run)"
        )
    if is_artifact(path):
        return "artifact"
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise RuntimeSourceError(
        f"{path.name} is not a model this app can serve: expected {', '.join(CHECKPOINT_SUFFIXES)} (checkpoint), "
        f".onnx, {', '.join(ENGINE_SUFFIXES)} (TensorRT) or an export / run directory"
    )


def open_runtime(source: str | Path, backend: str = "auto", device: str = "auto") -> Runtime:
    """A checkpoint on PyTorch, ONNX or an export on onnxruntime (``auto``: its engines where TensorRT runs), an
    engine on TensorRT; ``onnxruntime:cpu|cuda|tensorrt`` forces a provider.
    """
    path = Path(source).expanduser()
    family, provider = parse_backend(backend)
    check_device_name(device)
    kind = source_kind(path)
    if kind in ("checkpoint", "artifact"):
        if family not in ("auto", "torch"):
            raise OptionError(f"{path} is a PyTorch checkpoint; backend {backend!r} needs an export (hjepa-export)")
        return RUNTIMES.get("torch").from_checkpoint(path, device=device)
    if family == "torch":
        raise OptionError(f"backend 'torch' needs a checkpoint, but {path} is an exported model ({kind})")
    if kind == "engine" or (kind == "export" and family == "tensorrt"):
        if family == "onnxruntime":
            raise OptionError(f"{path} is a TensorRT engine; onnxruntime needs the .onnx file")
        return RUNTIMES.get("tensorrt").open(path, device=device)
    if kind == "export" and family == "auto":
        tensorrt = RUNTIMES.get("tensorrt")
        if tensorrt.usable(device) and tensorrt.has_engines(path):
            return tensorrt.open(path, device=device)
    if family == "tensorrt":  # a single .onnx file
        raise OptionError(f"{path} is an ONNX model; backend 'tensorrt' needs an .engine (or onnxruntime:tensorrt)")
    return RUNTIMES.get("onnxruntime").open(path, provider=provider, device=device)


def _lists_levels(directory: Path) -> bool:
    """The manifest lists an ONNX or engine level (``--format hjepa`` alone lists none)."""
    try:
        return any(any(entry.values()) for entry in read_manifest(directory).files.values())
    except RuntimeSourceError:
        return False
