"""Every onnxruntime session opens here, so providers, threads, spinning and logging match everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hjepa.errors import OptionError
from hjepa.inference.artifacts.metadata import RuntimeUnavailableError

INPUT_NAME = "images"
OUTPUT_NAMES = ("tokens", "pooled")
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def choose_providers(provider: str | None, device: str, available: list[str]) -> list[str]:
    """Providers best first, CPU last; a forced ``provider`` that is absent is an error naming those present."""
    if provider is not None:
        if provider not in PROVIDERS:
            raise OptionError(f"unknown onnxruntime provider {provider!r}; valid: {', '.join(PROVIDERS)}")
        wanted = PROVIDERS[provider]
        if wanted not in available:
            hint = " (install onnxruntime-gpu with a matching CUDA / TensorRT)" if provider != "cpu" else ""
            raise RuntimeUnavailableError(
                f"onnxruntime here has no {wanted}; available providers: {', '.join(available)}{hint}"
            )
        return [wanted] if wanted == PROVIDERS["cpu"] else [wanted, PROVIDERS["cpu"]]
    if device == "cpu":
        return [PROVIDERS["cpu"]]
    gpu = [PROVIDERS[name] for name in ("tensorrt", "cuda") if PROVIDERS[name] in available]
    if device.startswith("cuda") and not gpu:
        raise RuntimeUnavailableError(
            f"device {device!r} asked for, but onnxruntime offers only {', '.join(available)} (install onnxruntime-gpu)"
        )
    return [*gpu, PROVIDERS["cpu"]]


def ort_session(
    model: str | Path | bytes,
    providers: list[str] | None = None,
    threads: int | None = None,
    spinning: bool = True,
) -> Any:
    """An ``InferenceSession`` on ``providers`` (default CPU), logging errors only.

    ``spinning=False`` lets idle threads sleep: on a shared machine spinning steals the cores others time on.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers or [PROVIDERS["cpu"]])


def default_threads() -> int:
    """torch's thread count, so onnxruntime is timed on the same cores."""
    return torch.get_num_threads()
