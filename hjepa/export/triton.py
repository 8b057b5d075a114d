"""Triton Inference Server model repository: ``REPO/hjepa_l{K}/config.pbtxt`` and ``REPO/hjepa_l{K}/1/model.*``.

A dynamic-batch export becomes a model with ``max_batch_size`` and ``dynamic_batching``; Triton's ``dims`` then leave
out the batch axis. A static export has ``max_batch_size: 0`` and its full shape in ``dims``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hjepa.errors import OptionError
from hjepa.export.onnx_export import INPUT_NAME, external_data_name

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "trt": ("tensorrt_plan", "model.plan")}


def model_name(level: int) -> str:
    return f"hjepa_l{level}"


def _dims(values: list[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _tensor(name: str, data_type: str, dims: list[int]) -> str:
    return f"  {{\n    name: \"{name}\"\n    data_type: {data_type}\n    dims: {_dims(dims)}\n  }}"


def config_pbtxt(
    metadata: dict[str, Any], kind: str, max_batch_size: int, static_batch: int | None = None
) -> str:
    """The text of ``config.pbtxt`` for one exported level.

    ``metadata`` is the level's decoded ONNX metadata; ``kind`` is ``"onnx"`` or ``"trt"``; ``static_batch`` is the
    fixed batch of a static export (``max_batch_size`` is then ignored and written as 0).
    """
    platform, _ = PLATFORMS[kind]
    size = metadata["img_size"]
    uint8 = metadata["input_format"] == "uint8_nhwc"
    image_dims = [size, size, 3] if uint8 else [3, size, size]
    tokens = metadata["grid"][0] * metadata["grid"][1]
    dim = metadata["embed_dim"]
    lead = [static_batch] if static_batch else []
    inputs = _tensor(INPUT_NAME, "TYPE_UINT8" if uint8 else "TYPE_FP32", lead + image_dims)
    outputs = ",\n".join(
        [_tensor("tokens", "TYPE_FP32", lead + [tokens, dim]), _tensor("pooled", "TYPE_FP32", lead + [dim])]
    )
    lines = [
        f"name: \"{model_name(metadata['level'])}\"",
        f"platform: \"{platform}\"",
        f"max_batch_size: {0 if static_batch else max_batch_size}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
    ]
    if not static_batch:
        preferred = sorted({b for b in (8, 16, 32, max_batch_size) if b <= max_batch_size})
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: {_dims(preferred)}\n  max_queue_delay_microseconds: 100\n}}"
        )
    kind_name = "KIND_GPU" if kind == "trt" else "KIND_AUTO"
    lines.append(f"instance_group [\n  {{\n    count: 1\n    kind: {kind_name}\n  }}\n]")
    return "\n".join(lines) + "\n"


def write_triton_model(
    repository: Path,
    model_file: Path,
    metadata: dict[str, Any],
    kind: str,
    max_batch_size: int,
    static_batch: int | None = None,
) -> Path:
    """Copy ``model_file`` to ``REPO/hjepa_l{K}/1/model.{onnx,plan}`` and write the config; returns the model dir."""
    if kind not in PLATFORMS:
        raise OptionError(f"unknown Triton model kind {kind!r}; valid: {', '.join(PLATFORMS)}")
    model_dir = repository / model_name(metadata["level"])
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    # A copy, not a link: a model repository is usually shipped on its own (to a server, an image, a bucket).
    shutil.copyfile(model_file, version_dir / PLATFORMS[kind][1])
    weights = model_file.parent / external_data_name(model_file)
    if kind == "onnx" and weights.is_file():  # a model over 2 GB keeps its weights beside it, under this name
        shutil.copyfile(weights, version_dir / weights.name)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(metadata, kind, max_batch_size, static_batch))
    return model_dir
