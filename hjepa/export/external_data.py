"""Levels over protobuf's 2 GB limit (I-JEPA ViT-H/14 is 2.5 GB in fp32): the weights are written once, to
``level{K}.onnx.data``, and every later step works from paths on a weightless graph.

A protobuf message cannot be serialised past 2 GB, so nothing here calls ``SerializeToString``, ``ByteSize`` or
in-memory shape inference on such a model. The traced graph and its fused copy are two small ``.onnx`` files in a
work folder that point at the same weights file; onnxruntime opens each from its path, one at a time, and the one
kept is moved into place beside the weights.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

from hjepa.export import fuse, onnx_export
from hjepa.export.errors import ExportError
from hjepa.export.onnx_export import (
    check_file,
    external_data_name,
    set_metadata,
    strip_debug_info,
    trace_onnx_file,
)
from hjepa.export.verify import compare, cpu_session, ort_runner
from hjepa.files import move
from hjepa.inference.runtimes.sessions import OUTPUT_NAMES

EXTERNAL_THRESHOLD = 1024  # tensors over 1 KB go to the weights file; shape constants stay in the graph


def externalise(model: onnx.ModelProto, directory: Path, data_name: str) -> None:
    """Move every tensor over 1 KB of ``model`` into ``directory/data_name``, in place: the proto keeps references
    only, so the weights' memory is freed tensor by tensor as they are written."""
    (directory / data_name).unlink(missing_ok=True)  # the writer appends to an existing file
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=data_name,
                                   size_threshold=EXTERNAL_THRESHOLD, convert_attribute=True)
    write_external_data_tensors(model, str(directory))


def load_graph(path: Path) -> onnx.ModelProto:
    """The graph of an ONNX file without its external weights (kilobytes, whatever the model's size)."""
    return onnx.load(str(path), load_external_data=False)


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Write a weightless graph beside the weights file it refers to, then check the pair from the path."""
    onnx.save_model(model, str(path))
    check_file(path)


SLIM_PASSES = 10  # onnxslim's own bound on its passes


def simplify_file(path: Path, data_name: str) -> None:
    """onnxslim on a model over 2 GB, pass by pass, without its shape inference: onnxslim sizes the model with
    ``ByteSize()``, which protobuf refuses past 2 GB (onnxslim 0.1.98). The graph passes and constant folding still
    run. ``onnxslim.slim`` keeps the model it was given, the graph of the last pass and the new model across its
    passes (three copies of the weights, 13 GB at ViT-H/14); here each pass drops the model before it, and the
    passes stop when one leaves the graph's structure as it found it."""
    try:
        import onnxslim
    except ImportError:
        raise ExportError("--simplify needs onnxslim, which is not installed: pip install onnxslim") from None
    metadata = {p.key: p.value for p in load_graph(path).metadata_props}
    try:
        try:
            slim = _slim_in_passes(path)
        except ImportError:  # another onnxslim layout: its one-call entry point, from the path
            slim = onnxslim.slim(str(path), no_shape_infer=True)
    except Exception as exc:  # onnxslim raises what its passes raise
        raise ExportError(f"--simplify: onnxslim failed on this model ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    set_metadata(slim, metadata)
    externalise(slim, path.parent, data_name)
    save_graph(slim, path)


def _slim_in_passes(path: Path) -> onnx.ModelProto:
    """onnxslim's optimisation passes (constant folding, pattern fusion, clean-up), one model alive at a time
    beside the one being written; ``ImportError`` where this onnxslim lays them out otherwise."""
    from onnxslim.core import freeze, optimize
    from onnxslim.core.optimization import OptimizationSettings
    from onnxslim.utils import TensorInfo, update_outputs_dims

    OptimizationSettings.reset(None)
    model = onnx.load(str(path))  # with its weights: constant folding reads them
    freeze(model)
    outputs = {TensorInfo(out).name: TensorInfo(out).shape for out in model.graph.output}  # as onnxslim.slim
    passes = [model]  # the list holds the only reference, so a pass's input is freed once it has run
    del model
    before = _structure(passes[0])
    for _ in range(SLIM_PASSES):
        passes.append(optimize(passes.pop()))
        after = _structure(passes[0])
        if after == before:
            break
        before = after
    return update_outputs_dims(passes.pop(), output_dims=outputs)


def _structure(model: onnx.ModelProto) -> tuple:
    """What a pass can change, without the weights' values: the nodes in order and the initializers' names."""
    nodes = tuple((node.op_type, tuple(node.input), tuple(node.output)) for node in model.graph.node)
    return nodes, tuple(sorted(init.name for init in model.graph.initializer))


def fuse_file(
    traced: Path, fused_path: Path, inputs: np.ndarray, names: Sequence[str] = OUTPUT_NAMES
) -> tuple[Path, int]:
    """``fuse.fuse_for_cpu`` from paths: ``(file to keep, attention blocks fused)``. The fused graph is written
    beside ``traced`` and shares its weights file; it is kept only when onnxruntime gives the traced graph's
    outputs within ``fuse.PARITY_ATOL``."""
    model = load_graph(traced)
    count = fuse.fuse_attention(model, traced.parent)
    if not count:
        return traced, 0
    fuse.fuse_patch_embed(model, traced.parent)
    save_graph(model, fused_path)
    del model
    # One session at a time: each holds the whole model in memory.
    reference = ort_runner(cpu_session(traced), names)(inputs)
    figures = compare(reference, ort_runner(cpu_session(fused_path), names)(inputs), names)
    worst = max(fig["max_abs_err"] for fig in figures.values())
    if worst > fuse.PARITY_ATOL:
        warnings.warn(f"fused attention differs from the traced graph ({worst:.2g}); "
                      "keeping the traced graph", stacklevel=2)
        return traced, 0
    return fused_path, count


def finish_large_level(
    traced: Path, onnx_path: Path, simplify: bool, fuse_inputs: np.ndarray | None,
    names: Sequence[str] = OUTPUT_NAMES,
) -> tuple[onnx.ModelProto, int]:
    """Simplify and fuse the traced file in its work folder, then move the kept graph and its weights to
    ``onnx_path``; returns ``(the weightless graph written, attention blocks fused)``."""
    work, data_name = traced.parent, external_data_name(onnx_path)
    if simplify:
        simplify_file(traced, data_name)
    chosen, count = traced, 0
    if fuse_inputs is not None:
        chosen, count = fuse_file(traced, work / "fused.onnx", fuse_inputs, names)
    graph = load_graph(chosen)  # weightless: an inlined file read back would be the whole model again
    if (work / data_name).stat().st_size < onnx_export._PROTOBUF_LIMIT - (1 << 20):
        _inline(chosen, onnx_path)  # under 2 GB the file keeps its weights inside, as small exports do
    else:
        move(work / data_name, onnx_path.parent / data_name)
        move(chosen, onnx_path)
    shutil.rmtree(work)
    return graph, count


def _inline(path: Path, onnx_path: Path) -> None:
    """Write the graph at ``path`` with its external weights read back in, as one file (the model is < 2 GB)."""
    model = onnx.load(str(path))  # also resets each tensor's external reference
    onnx.save_model(model, str(onnx_path))
    del model
    check_file(onnx_path)


def _work_folder(onnx_path: Path) -> Path:
    work = onnx_path.parent / f".{onnx_path.name}.work"
    work.mkdir()
    return work


def trace_large_level(
    module: torch.nn.Module, example: torch.Tensor, opset: int, dynamic: bool, onnx_path: Path,
    metadata: dict[str, str], names: Sequence[str] = OUTPUT_NAMES,
) -> Path:
    """Trace a level over 2 GB into a work folder beside ``onnx_path``, with its metadata; returns the traced file.
    The caller may drop ``module`` (and its weights) before :func:`finish_large_level` opens onnxruntime."""
    traced = _work_folder(onnx_path) / onnx_path.name  # the weights file is named after it: level{K}.onnx.data
    trace_onnx_file(module, example, opset, dynamic, traced, names)
    graph = load_graph(traced)
    strip_debug_info(graph)
    set_metadata(graph, metadata)
    save_graph(graph, traced)
    return traced


def export_large_level(
    module: torch.nn.Module, example: torch.Tensor, opset: int, dynamic: bool, onnx_path: Path,
    metadata: dict[str, str], simplify: bool, fuse_inputs: np.ndarray | None,
    names: Sequence[str] = OUTPUT_NAMES,
) -> tuple[onnx.ModelProto, int]:
    """Trace a level over 2 GB to ``onnx_path`` + ``<name>.data`` (simplified, fused when ``fuse_inputs`` is
    given) without a copy of the weights in memory; returns ``(the weightless graph written, blocks fused)``."""
    traced = trace_large_level(module, example, opset, dynamic, onnx_path, metadata, names)
    return finish_large_level(traced, onnx_path, simplify, fuse_inputs, names)


def save_large_level(
    model: onnx.ModelProto, onnx_path: Path, simplify: bool, fuse_inputs: np.ndarray | None,
    names: Sequence[str] = OUTPUT_NAMES,
) -> tuple[onnx.ModelProto, int]:
    """Write a traced level over 2 GB as ``onnx_path`` + ``<name>.data`` (simplified, fused when ``fuse_inputs``
    is given); returns ``(the weightless graph written, attention blocks fused)``. ``model`` loses its weights
    to the file on the way (its memory is freed)."""
    traced = _work_folder(onnx_path) / onnx_path.name
    externalise(model, traced.parent, external_data_name(onnx_path))
    save_graph(model, traced)
    return finish_large_level(traced, onnx_path, simplify, fuse_inputs, names)
