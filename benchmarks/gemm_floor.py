"""The weight-GEMM floor of an exported level: its weight matrix products alone, on onnxruntime.

Any graph that computes a level's outputs multiplies every token by every weight matrix of the encoder (the patch
embedding, qkv, the attention projection, both MLP layers, any linear layer of the level head). ``floor_model``
builds an ONNX graph of exactly those products and nothing else: no LayerNorm, GELU, softmax, attention products or
residual adds. Timed on onnxruntime with the same threads as the real graph, in fp32 and after the export's own
``quantize_int8`` (per-channel 7-bit weights, the patch embedding left in float), it bounds how fast onnxruntime's
kernels can run the level on this machine, so ``eager time / floor time`` is the largest speed-up over torch eager
those kernels allow.

It errs towards a lower floor (a higher ceiling): products that read the same activation shape share one input, so
int8 quantizes that activation once for all of them, and inputs stay warm in cache between products. Outputs are
written into buffers bound once (IO binding), so the timing holds no allocation or copy back to numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from hjepa.export.fuse import PATCH_EMBED_NODE


def weight_gemms(module: torch.nn.Module, images: torch.Tensor) -> list[tuple[str, int, int, int]]:
    """``(kind, rows per image, in features, out features)`` of every weight product one forward of ``module``
    makes: each ``nn.Linear`` call, and each convolution with stride = kernel (a patch embedding) as one product of
    its flattened patches."""
    gemms: list[tuple[str, int, int, int]] = []
    batch = images.shape[0]

    def linear(layer: torch.nn.Linear, args: tuple, _out: torch.Tensor) -> None:
        gemms.append(("linear", args[0].numel() // (batch * layer.in_features), layer.in_features, layer.out_features))

    def conv(layer: torch.nn.Conv2d, _args: tuple, out: torch.Tensor) -> None:
        if tuple(layer.stride) != tuple(layer.kernel_size):
            raise ValueError(f"{layer}: only a patch embedding (stride = kernel) is a single product of patches")
        patch = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
        gemms.append(("patch_embed", out.shape[-2] * out.shape[-1], patch, layer.out_channels))

    hooks = [m.register_forward_hook(linear) for m in module.modules() if isinstance(m, torch.nn.Linear)]
    hooks += [m.register_forward_hook(conv) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            module(images)
    finally:
        for hook in hooks:
            hook.remove()
    return gemms


def floor_model(gemms: list[tuple[str, int, int, int]], seed: int = 0) -> onnx.ModelProto:
    """One ``MatMul`` per product with a random stored weight, reading input ``x_{rows}_{in}`` ``[B, rows, in]``;
    the patch embedding's node is named ``PATCH_EMBED_NODE`` so ``quantize_int8`` leaves it in float, as in the
    export."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, onnx.ValueInfoProto] = {}
    nodes, weights, outputs = [], [], []
    for i, (kind, rows, fan_in, fan_out) in enumerate(gemms):
        source = f"x_{rows}_{fan_in}"
        inputs.setdefault(source, helper.make_tensor_value_info(source, TensorProto.FLOAT, ["batch", rows, fan_in]))
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{i}"))
        name = PATCH_EMBED_NODE if kind == "patch_embed" else f"gemm{i}"
        nodes.append(helper.make_node("MatMul", [source, f"w{i}"], [f"y{i}"], name=name))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["batch", rows, fan_out]))
    graph = helper.make_graph(nodes, "gemm_floor", list(inputs.values()), outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    return model


def floor_runner(session: ort.InferenceSession) -> Callable[[np.ndarray], None]:
    """``run(images)``: one pass of the floor graph at ``images``' batch size. Inputs and outputs of each batch
    size are made and bound once, on first use, so a timed call runs the products and nothing else."""
    bindings: dict[int, ort.IOBinding] = {}
    rng = np.random.default_rng(1)

    def bind(batch: int) -> ort.IOBinding:
        binding = session.io_binding()
        for node_input in session.get_inputs():
            rows, fan_in = node_input.shape[1:]
            binding.bind_cpu_input(node_input.name, rng.standard_normal((batch, rows, fan_in), dtype=np.float32))
        for node_output in session.get_outputs():
            buffer = ort.OrtValue.ortvalue_from_shape_and_type([batch, *node_output.shape[1:]], np.float32)
            binding.bind_ortvalue_output(node_output.name, buffer)
        return binding

    def run(images: np.ndarray) -> None:
        batch = images.shape[0]
        if batch not in bindings:
            bindings[batch] = bind(batch)
        session.run_with_iobinding(bindings[batch])

    return run


def save_floor_models(module: torch.nn.Module, images: torch.Tensor, folder: Path) -> tuple[Path, Path, dict]:
    """Write ``gemm_floor_fp32.onnx`` and its int8 version to ``folder``; returns both paths and a summary (product
    count and multiply-accumulates per image)."""
    from hjepa.export.onnx_export import save_onnx
    from hjepa.export.quantize import quantize_int8

    gemms = weight_gemms(module, images)
    fp32 = save_onnx(floor_model(gemms), folder / "gemm_floor_fp32.onnx")
    int8 = folder / "gemm_floor_int8.onnx"
    quantize_int8(fp32, int8)
    macs = sum(rows * fan_in * fan_out for _, rows, fan_in, fan_out in gemms)
    return fp32, int8, {"products": len(gemms), "gmacs_per_image": macs / 1e9}
