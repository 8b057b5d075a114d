"""int8 export: onnxruntime dynamic quantization of the weight matmuls, and its cost in k-NN accuracy.

Dynamic quantization stores MatMul / Gemm weights as int8 (per output channel, symmetric) and quantizes activations
on the fly per tensor, so it needs no calibration data. Weights use 7 bits (``reduce_range``): x86 CPUs without
VNNI multiply u8 x s8 with ``vpmaddubsw``, whose int16 pair sums saturate with full-range weights; measured on this
package's models that saturation cost a cosine of 0.95 to fp32, while 7-bit weights keep it above 0.9999.
Only matmuls whose second input is a stored weight are quantized: the attention products (q @ k^T, attn @ v)
multiply two activations, and quantizing those costs accuracy for little speed. A fused ``com.microsoft.Attention``
(``fuse.py``) becomes ``QAttention`` the same way: int8 qkv projection, float attention products. The k-NN
comparison below measures what a user loses: top-1 of int8 features vs fp32 features on a held-out split of the
checkpoint's dataset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx.external_data_helper import uses_external_data

from hjepa.config import Config
from hjepa.export.errors import ExportError
from hjepa.export.fuse import PATCH_EMBED_NODE

QUANTIZED_OPS = ("MatMul", "Gemm", "Attention")  # Attention: the fused qkv projection (``fuse.py``) -> QAttention
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul / Gemm / Attention nodes whose second input is an initializer (a weight, not an
    activation), but for the patch embedding's ``MatMul`` (``fuse.fuse_patch_embed``)."""
    weights = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type in QUANTIZED_OPS and node.input[1] in weights
            and node.name != PATCH_EMBED_NODE]  # the patch embedding sees raw pixels: it stays float


def quantize_int8(src: Path, dst: Path) -> int:
    """Write the int8 dynamically quantized version of the ONNX model ``src`` to ``dst``; returns the node count.

    The hjepa metadata of ``src`` is copied to ``dst`` (quantization keeps ``metadata_props``, but the precision
    entry is the caller's to update).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)  # the graph is enough to pick the nodes
    nodes = weight_matmuls(model)
    external = any(uses_external_data(t) for t in model.graph.initializer)  # a model over 2 GB
    if not nodes:
        raise ExportError(f"{src.name} has no weight MatMul / Gemm nodes to quantize")
    quant_logger = logging.getLogger()  # onnxruntime.quantization logs its pre-processing advice on the root logger
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)
    try:
        # From the path: onnxruntime then infers shapes file to file, never serialising a >2 GB model in memory.
        with _lean_shape_refresh():
            quantize_dynamic(
                src, dst, op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes, per_channel=True,
                reduce_range=True, weight_type=QuantType.QInt8, use_external_data_format=external,
            )
    finally:
        quant_logger.setLevel(level)
    return len(nodes)


@contextmanager
def _lean_shape_refresh() -> Iterator[None]:
    """Inside, onnxruntime's quantizer refreshes its shapes with :func:`infer_shapes_in_place` rather than a deep
    copy of the model saved and loaded again (two more copies of the weights: 5 GB at ViT-H). The int8 file is
    verified against PyTorch afterwards either way."""
    from onnxruntime.quantization import onnx_quantizer

    name = "save_and_reload_model_with_shape_infer"
    original = getattr(onnx_quantizer, name, None)
    if original is None:  # another onnxruntime: its own way, at its own cost
        yield
        return
    setattr(onnx_quantizer, name, infer_shapes_in_place)
    try:
        yield
    finally:
        setattr(onnx_quantizer, name, original)


def infer_shapes_in_place(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its ``value_info`` inferred again, returned as is: shapes are inferred on a copy of the graph
    whose large weights are graph inputs of the same type and shape (no data), so no weight is copied."""
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    graph_only = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                                 functions=model.functions)
    graph = graph_only.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)  # kept, as a reload keeps them: inference adds to them
    for init in model.graph.initializer:
        if init.data_type in FLOATS and math.prod(init.dims) > 1024:  # a weight: its shape is all inference needs
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            graph.initializer.append(init)  # shape and index constants: inference may read their values
    inferred = onnx.shape_inference.infer_shapes(graph_only)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    add_infer_metadata(model)
    return model


def _model_inputs(images: torch.Tensor, img_size: int, metadata: dict[str, Any]) -> np.ndarray:
    """uint8 dataset images ``[B, C, H, W]`` -> the export's input format at ``img_size``, as ``EvalTransform`` does."""
    from hjepa.data import EvalTransform

    if metadata["input_format"] == "uint8_nhwc":
        unit = EvalTransform(img_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(images)  # [B, 3, S, S] in [0, 1]
        return (unit * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return EvalTransform(img_size, metadata["mean"], metadata["std"])(images).numpy()


def _features(session: Any, images: torch.Tensor, metadata: dict[str, Any], batch_size: int = 64) -> torch.Tensor:
    # A static export (--static --batch B) takes exactly B images: run chunks of B, the last one padded.
    fixed = session.get_inputs()[0].shape[0]
    fixed = fixed if isinstance(fixed, int) and fixed > 0 else None
    batch_size = fixed or batch_size
    chunks = []
    for start in range(0, len(images), batch_size):
        inputs = _model_inputs(images[start : start + batch_size], metadata["img_size"], metadata)
        count = len(inputs)
        if fixed is not None and count < fixed:
            inputs = np.concatenate([inputs, np.zeros((fixed - count, *inputs.shape[1:]), inputs.dtype)])
        chunks.append(torch.from_numpy(session.run(["pooled"], {"images": inputs})[0][:count]).float())
    return torch.cat(chunks)


def _split_arrays(cfg: Config, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    from hjepa.data import build_dataset
    from hjepa.inference.features.extract import spread_arrays

    return spread_arrays(build_dataset(cfg.data.dataset, split, cfg.data.data_dir, download=False), count)


def int8_knn(
    fp32_session: Any,  # a session, or the file's path
    int8_session: Any,
    cfg: Config,
    metadata: dict[str, Any],
    train_samples: int = 1000,
    test_samples: int = 500,
) -> dict[str, Any]:
    """k-NN top-1 (%) of fp32 and int8 pooled features on ``cfg.data.dataset``, or ``{"skipped": reason}``.

    Train features come from ``train_samples`` images of the train split, test features from ``test_samples`` of
    the test split, both spread evenly over the split; k and T are ``cfg.eval.knn_k[0]`` / ``knn_temperature``.
    A dataset that cannot be read here (not downloaded, no ``data_dir``) is recorded, not fatal: the export
    itself is still valid and verified.
    """
    from hjepa.data import DataError
    from hjepa.inference.features.knn import knn_evaluate

    try:
        train_images, train_labels = _split_arrays(cfg, "train", train_samples)
        test_images, test_labels = _split_arrays(cfg, "test", test_samples)
    except (DataError, OSError, ValueError, RuntimeError) as exc:
        return {"dataset": cfg.data.dataset, "skipped": f"dataset unavailable: {str(exc).splitlines()[0]}"}
    k = cfg.eval.knn_k[0]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    top1 = {}
    for name, session in (("fp32", fp32_session), ("int8", int8_session)):
        if isinstance(session, (str, Path)):  # opened only now that the dataset is here, and one at a time
            from hjepa.export.verify import cpu_session

            session = cpu_session(session)
        scores = knn_evaluate(
            _features(session, train_images, metadata), train_labels, _features(session, test_images, metadata),
            test_labels, ks=[k], temperature=cfg.eval.knn_temperature, num_classes=num_classes,
        )
        session = None  # the next model's session opens after this one is gone
        top1[name] = scores[k]["top1"]
    return {
        "dataset": cfg.data.dataset,
        "train_samples": len(train_labels),
        "test_samples": len(test_labels),
        "k": k,
        "temperature": cfg.eval.knn_temperature,
        "fp32_top1": top1["fp32"],
        "int8_top1": top1["int8"],
        "delta_top1": top1["int8"] - top1["fp32"],
    }
