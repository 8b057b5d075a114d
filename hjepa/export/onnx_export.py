"""Trace a ``LevelEncoder`` to ONNX: dynamic batch axis, weights inside the file, metadata, checked, atomic write.

Exporter choice (measured with torch 2.14 on the timm ViT of this package): both ``dynamo=True`` (torch.export) and
the legacy TorchScript exporter give outputs within 1e-6 of PyTorch. The dynamo exporter is used because it is the
maintained path (TorchScript export is deprecated), keeps the batch axis symbolic while every other dimension stays
static, and emits fused ``LayerNormalization`` / ``Gelu`` nodes that onnxruntime and TensorRT run as single kernels.
It is slower to trace (seconds, not tenths), so the TorchScript exporter remains only as a fallback when
torch.export cannot capture a module; the manifest records which one was used.
"""

from __future__ import annotations

import gc
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn as nn

from hjepa.export.errors import ExportError
from hjepa.files import atomic_path
from hjepa.inference.runtimes.sessions import INPUT_NAME, OUTPUT_NAMES

BATCH_AXIS = "batch"
DEFAULT_OPSET = 20
MIN_OPSET, MAX_OPSET = 18, 23  # the dynamo exporter targets opset >= 18; onnxruntime 1.2x runs up to 23
_PROTOBUF_LIMIT = 2**31 - 1  # a single protobuf message cannot exceed 2 GB; bigger models need external data
FILE_TRACE_BYTES = 256 * 2**20  # weights above this are traced to a file and handled from paths (external_data)


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported; choose {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")


def trace_onnx(
    module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool = True,
    output_names: Sequence[str] = OUTPUT_NAMES,
) -> tuple[onnx.ModelProto, str]:
    """Trace ``module(example) -> (tokens, pooled)`` to an in-memory ONNX model; returns ``(model, exporter)``.

    With ``dynamic`` the batch axis is the symbol ``"batch"``; ``example`` must then have batch >= 2, because
    torch.export specialises a size-1 dimension to the constant 1.
    """
    check_opset(opset)
    if dynamic and example.shape[0] < 2:
        raise ValueError("a dynamic-batch export needs an example batch of at least 2")
    try:
        model = _trace_dynamo(module, example, opset, dynamic, output_names)
        exporter = "dynamo"
    except Exception as exc:  # torch.export failures come as many exception types; the fallback reports its own
        warnings.warn(f"torch.export could not trace the model ({type(exc).__name__}); using the TorchScript exporter",
                      stacklevel=2)
        model = _trace_torchscript(module, example, opset, dynamic, output_names)
        exporter = "torchscript"
    strip_debug_info(model)
    return model, exporter


def _dynamo_program(
    module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool, output_names: Sequence[str] = OUTPUT_NAMES
) -> Any:
    dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim(BATCH_AXIS)}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export warns about internals the user cannot act on
        return torch.onnx.export(
            module, (example,), None, input_names=[INPUT_NAME], output_names=list(output_names),
            opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False, optimize=True,
        )


def module_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s weights and buffers (each tensor once): about the size of its ONNX file."""
    tensors = {t.data_ptr(): t for t in module.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def is_large(module: nn.Module) -> bool:
    """Whether ``module`` is traced straight to a file: over 256 MB the in-memory proto, its fused copy and the
    bytes handed to onnxruntime would cost several copies of the weights (ViT-L: 10.5 GB for 1.2 GB of weights)."""
    return module_bytes(module) > min(FILE_TRACE_BYTES, _PROTOBUF_LIMIT)


def trace_onnx_file(
    module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool, path: Path,
    output_names: Sequence[str] = OUTPUT_NAMES,
) -> None:
    """Trace ``module`` straight to ``path`` + ``<name>.data`` from torch's own tensors: no in-memory proto, which
    could not be serialised past 2 GB and would hold a second copy of the weights."""
    check_opset(opset)
    if dynamic and example.shape[0] < 2:
        raise ValueError("a dynamic-batch export needs an example batch of at least 2")
    try:
        program = _dynamo_program(module, example, opset, dynamic, output_names)
    except Exception as exc:  # torch.export fails with many exception types
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ExportError(f"torch.export could not trace this model ({type(exc).__name__}: {reason[:200]}); models "
                          "over 2 GB have no TorchScript fallback") from None
    program.save(str(path), external_data=True)  # writes <name>.data beside it, tensor by tensor
    del program
    _drop_traced_tensors()


def _drop_traced_tensors() -> None:
    """onnxscript's rewrite rules keep the last graph they matched in module globals, and that graph's values hold
    the traced module's tensors: emptied, they no longer keep the torch weights alive (2.5 GB at ViT-H)."""
    import onnx_ir

    gc.collect()
    for obj in gc.get_objects():
        # type(), not isinstance(): the latter reads __class__, which warns on some torch objects
        if issubclass(type(obj), onnx_ir.Value) and type(obj.const_value).__name__ == "TorchTensor":
            obj.const_value = None


def _trace_dynamo(
    module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool, output_names: Sequence[str] = OUTPUT_NAMES
) -> onnx.ModelProto:
    return _dynamo_program(module, example, opset, dynamic, output_names).model_proto


def _trace_torchscript(
    module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool, output_names: Sequence[str] = OUTPUT_NAMES
) -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {name: {0: BATCH_AXIS} for name in (INPUT_NAME, *output_names)} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of the legacy exporter
        torch.onnx.export(
            module, (example,), buffer, input_names=[INPUT_NAME], output_names=list(output_names),
            opset_version=min(opset, 20), dynamo=False, dynamic_axes=axes,
        )
    return onnx.load_from_string(buffer.getvalue())


def strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop per-node metadata and doc strings: they hold Python stack traces with local paths (and half the bytes)."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the model-level ``metadata_props`` with ``metadata`` (string keys and values)."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "hjepa"


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and graph clean-up with onnxslim (``pip install onnxslim``)."""
    try:
        import onnxslim
    except ImportError:
        raise ExportError("--simplify needs onnxslim, which is not installed: pip install onnxslim") from None
    metadata = {p.key: p.value for p in model.metadata_props}
    slim = onnxslim.slim(model)
    set_metadata(slim, metadata)
    return slim


def external_data_name(path: Path) -> str:
    """The name of the weights file beside ``path`` when the model is over the 2 GB limit (``level0.onnx.data``)."""
    return f"{Path(path).name}.data"


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """Check ``model`` (``full_check``: types and shapes) and write it to ``path`` atomically.

    Weights stay inside the file unless the model exceeds protobuf's 2 GB limit, in which case they go to
    ``<name>.data`` beside it.
    """
    path = Path(path)
    if not needs_external_data(model):
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported ONNX graph is invalid: {str(exc).splitlines()[0]}") from None
        with atomic_path(path) as tmp:
            onnx.save_model(model, tmp)
        return path

    def write_external(tmp: Path) -> None:
        onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external_data_name(path), size_threshold=1024)
        check_file(tmp)  # a > 2 GB model can only be checked from its path

    with atomic_path(path) as tmp:
        write_external(tmp)
    return path


def check_file(path: Path) -> None:
    """``onnx.checker`` with ``full_check`` on the file (and its external weights), as a one-line ExportError."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {str(exc).splitlines()[0]}") from None


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes ``tensor`` holds inside the proto (0 when its data is external), read from its dims, not its data."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    count = 1
    for dim in tensor.dims:
        count *= dim
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return count * 8
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def model_bytes(model: onnx.ModelProto) -> int:
    """An estimate of ``model``'s serialised size that never serialises it (``ByteSize`` fails past 2 GB)."""
    total = sum(tensor_bytes(t) for t in model.graph.initializer)
    for node in model.graph.node:
        total += sum(tensor_bytes(a.t) for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    return total + 1_000 * len(model.graph.node)  # names, shapes and attributes: generous


def needs_external_data(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is over protobuf's 2 GB limit, so that its weights must go to ``<name>.data``."""
    return model_bytes(model) > _PROTOBUF_LIMIT
