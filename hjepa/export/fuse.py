"""CPU graph fusion of a traced ``LevelEncoder``: one ``com.microsoft.Attention`` node per transformer block.

The dynamo exporter writes each timm attention block as ~30 nodes: the qkv ``MatMul`` + bias ``Add``, a
``Reshape`` / ``Transpose`` to ``[3, B, H, N, hd]``, three ``Slice`` + ``Squeeze`` pairs, the transposes of k,
the two halves of the softmax scale as ``Mul``, ``MatMul`` / ``Softmax`` / ``MatMul`` and the ``Transpose`` /
``Reshape`` back to ``[B, N, D]``. onnxruntime's transformer optimizer does not recognise that shape (its
attention patterns are the BERT ones, with separate q / k / v matmuls), so ``fuse_attention`` matches it here
and replaces each block by the contrib ``Attention`` op: packed qkv projection, scaled dot-product attention and
head merge in one CPU kernel, which ``quantize_dynamic`` turns into ``QAttention`` for int8. onnxruntime fuses
the rest when it loads the file (``BiasGelu``, ``DynamicQuantizeMatMul``). Its offline ``SkipLayerNormalization``
fusion is not used: on this package's models its CPU kernel was 3x slower than the ``Add`` + ``LayerNormalization``
it replaces (ViT-S/16, onnxruntime 1.32), and the opset-23 ONNX ``Attention`` the exporter can emit ran 10% slower
than the contrib op (q, k and v come in as three tensors instead of one packed projection). ``fuse_patch_embed``
also rewrites the patch embedding ``Conv`` as a ``MatMul`` over patches, which spares onnxruntime its NCHWc
layout conversion.

Contrib ops run on onnxruntime only (CPU and CUDA), not in a TensorRT engine, so the fused graph is the
onnxruntime file of an export and never the source of an engine. A block that does not match exactly is left as
it is, and ``fuse_for_cpu`` keeps the fused graph only if onnxruntime gives the same outputs as the traced one.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
# Node types the traced attention of one block consists of; anything else in the matched region is not ours.
ATTENTION_OPS = {"MatMul", "Add", "Reshape", "Transpose", "Slice", "Squeeze", "Shape", "Concat", "Mul", "Softmax"}
PARITY_ATOL = 1e-4  # fused vs traced float32 graph; measured differences are ~1e-6
PATCH_EMBED_NODE = "patch_embed_matmul"  # the patch embedding as a MatMul (``fuse_patch_embed``); int8 leaves it float


class _Graph:
    """Producer / consumer indices of a graph's nodes, and its initializers as arrays."""

    def __init__(self, graph: onnx.GraphProto, base_dir: Path | None = None) -> None:
        self.graph = graph
        self.base_dir = base_dir  # where the weights of a model over 2 GB are (``level{K}.onnx.data``)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.outputs = {out.name for out in graph.output}

    def const(self, name: str) -> np.ndarray | None:
        init = self.initializers.get(name)
        # to_array reads an external tensor from base_dir without writing it back into the proto
        return None if init is None else numpy_helper.to_array(init, base_dir=str(self.base_dir or ""))

    def dims(self, name: str) -> tuple[int, ...] | None:
        """An initializer's shape, read from the proto (a weight over 2 GB's file stays unread)."""
        init = self.initializers.get(name)
        return None if init is None else tuple(init.dims)

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def parent(self, node: onnx.NodeProto, index: int, op_type: str) -> onnx.NodeProto | None:
        found = self.producer.get(node.input[index]) if index < len(node.input) else None
        return found if found is not None and found.op_type == op_type else None


def _attr(node: onnx.NodeProto, name: str) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _region(g: _Graph, start: onnx.NodeProto, end: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The nodes on any path from ``start`` to ``end`` (inclusive), or None unless the region is self-contained:
    every tensor it computes, except ``end``'s output, is consumed inside it and is not a graph output."""
    ahead, stack = {id(start): start}, [start]
    while stack:
        for out in stack.pop().output:
            for user in g.consumers.get(out, []):
                if id(user) not in ahead:
                    ahead[id(user)] = user
                    stack.append(user)
    behind, stack = {id(end): end}, [end]
    while stack:
        for name in stack.pop().input:
            node = g.producer.get(name)
            if node is not None and id(node) in ahead and id(node) not in behind:
                behind[id(node)] = node
                stack.append(node)
    # Shape and other side branches hang off region tensors without leading to ``end``: take them in when every
    # consumer of theirs is in the region (they would otherwise be dead after the rewrite anyway).
    region = dict(behind)
    grew = True
    while grew:
        grew = False
        for key, node in ahead.items():
            if key in region:
                continue
            users = [u for out in node.output for u in g.consumers.get(out, [])]
            if users and all(id(u) in region for u in users):
                region[key] = node
                grew = True
    for node in region.values():
        if node.op_type not in ATTENTION_OPS or node.domain not in ("", "ai.onnx"):
            return None
        if node is end:
            continue
        for out in node.output:
            if out in g.outputs or any(id(u) not in region for u in g.consumers.get(out, [])):
                return None
    return list(region.values())


def _match_block(g: _Graph, softmax: onnx.NodeProto) -> tuple[onnx.NodeProto, list[onnx.NodeProto]] | None:
    """The ``Attention`` node replacing the block around ``softmax`` and the nodes it replaces, or None."""
    scores = g.parent(softmax, 0, "MatMul")
    mix = g.only_consumer(softmax.output[0], "MatMul")
    if scores is None or mix is None or mix.input[0] != softmax.output[0] or _attr(softmax, "axis") not in (-1, 3):
        return None
    merge = g.only_consumer(mix.output[0], "Transpose")
    if merge is None or list(_attr(merge, "perm") or []) != [0, 2, 1, 3]:
        return None
    out = g.only_consumer(merge.output[0], "Reshape")
    # Walk up from v: Squeeze(Slice(Transpose[2, 0, 3, 1, 4](Reshape(Add(MatMul(x, W), bias))))).
    squeeze = g.parent(mix, 1, "Squeeze")
    split = g.parent(squeeze, 0, "Slice") if squeeze is not None else None
    heads_first = g.parent(split, 0, "Transpose") if split is not None else None
    if out is None or heads_first is None or list(_attr(heads_first, "perm") or []) != [2, 0, 3, 1, 4]:
        return None
    unpack = g.parent(heads_first, 0, "Reshape")
    bias_add = g.parent(unpack, 0, "Add") if unpack is not None else None
    if bias_add is None:
        return None
    shape = g.const(unpack.input[1])
    if shape is None or shape.shape != (5,) or shape[2] != 3:
        return None
    num_heads, head_dim = int(shape[3]), int(shape[4])
    hidden = num_heads * head_dim
    proj = None
    for index in (0, 1):
        proj = g.parent(bias_add, index, "MatMul")
        if proj is not None:
            bias_name = bias_add.input[1 - index]
            break
    if proj is None:
        return None
    weight, bias, target = g.dims(proj.input[1]), g.dims(bias_name), g.const(out.input[1])
    if weight != (hidden, 3 * hidden) or bias != (3 * hidden,):
        return None
    if target is None or target.shape != (3,) or target[-1] != hidden:
        return None
    # The softmax scale: the exporter splits 1/sqrt(hd) into sqrt on q and on k; their product must be that.
    scale = 1.0
    for index in (0, 1):
        mul = g.parent(scores, index, "Mul")
        factor = None if mul is None else g.const(mul.input[1])
        if factor is None or factor.size != 1:
            return None
        scale *= float(factor.reshape(()))
    if not math.isclose(scale, 1.0 / math.sqrt(head_dim), rel_tol=1e-5):
        return None
    nodes = _region(g, proj, out)
    counts = defaultdict(int)
    for node in nodes or []:
        counts[node.op_type] += 1
    if not nodes or counts["MatMul"] != 3 or counts["Softmax"] != 1:
        return None
    fused = helper.make_node("Attention", [proj.input[0], proj.input[1], bias_name], [out.output[0]],
                             name=f"{out.output[0]}_attention", domain=MS_DOMAIN, num_heads=num_heads)
    return fused, nodes


def fuse_attention(model: onnx.ModelProto, base_dir: Path | None = None) -> int:
    """Replace every matching attention block of ``model`` (in place) by ``com.microsoft.Attention``; returns how
    many were replaced. Unmatched blocks stay as traced; initializers nothing uses any more are dropped.
    ``base_dir``: the folder of a model whose weights are external data."""
    g = _Graph(model.graph, base_dir)
    replaced: dict[int, onnx.NodeProto | None] = {}
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        match = _match_block(g, softmax)
        if match is None or any(id(n) in replaced for n in match[1]):
            continue
        fused, nodes = match
        for node in nodes:
            replaced[id(node)] = None
        replaced[id(nodes[-1])] = fused  # the slot of one removed node; topological order is restored below
    if not replaced:
        return 0
    kept = [replaced.get(id(n), n) for n in model.graph.node]
    kept = [n for n in kept if n is not None]
    del model.graph.node[:]
    model.graph.node.extend(_topological(kept, model.graph))
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _drop_unused_initializers(model)
    return sum(1 for n in model.graph.node if n.op_type == "Attention" and n.domain == MS_DOMAIN)


def fuse_patch_embed(model: onnx.ModelProto, base_dir: Path | None = None) -> int:
    """Rewrite the patch embedding (``Conv`` with stride = kernel, then ``flatten(2).transpose(1, 2)``) as one
    ``MatMul`` over patches, in place; returns how many were rewritten (0 or 1).

    ``[B, C, H, W]`` is reshaped to ``[B, C, H/p, p, W/q, q]``, transposed to ``[B, H/p, W/q, C, p, q]`` and flattened
    to ``[B, N, C*p*q]``, which times the reshaped kernel ``[C*p*q, D]`` plus the bias is the ``[B, N, D]`` the
    transpose gave. onnxruntime runs a ``Conv`` through its NCHWc layout, with a reorder of the output; at batch 1
    that costs the 64-token quickstart model about 8 % of its fp32 latency. The ``MatMul`` is named
    ``PATCH_EMBED_NODE`` so that int8 quantization can leave it in float: it sees the raw pixels.
    """
    g = _Graph(model.graph, base_dir)
    shapes = _static_shapes(model)
    for conv in [n for n in model.graph.node if n.op_type == "Conv"]:
        weight = g.const(conv.input[1])
        bias = g.const(conv.input[2]) if len(conv.input) > 2 else None
        if weight is None or bias is None or weight.ndim != 4:
            continue
        kernel = list(_attr(conv, "kernel_shape") or weight.shape[2:])
        if list(_attr(conv, "strides") or [1, 1]) != kernel or kernel != list(weight.shape[2:]):
            continue
        if any(_attr(conv, "pads") or []) or any(d != 1 for d in _attr(conv, "dilations") or [1]):
            continue
        if (_attr(conv, "group") or 1) != 1 or (_attr(conv, "auto_pad") or b"NOTSET") != b"NOTSET":
            continue
        reshape = g.only_consumer(conv.output[0], "Reshape")
        transpose = g.only_consumer(reshape.output[0], "Transpose") if reshape is not None else None
        source = shapes.get(conv.input[0])
        if transpose is None or list(_attr(transpose, "perm")) != [0, 2, 1] or source is None or len(source) != 4:
            continue
        dim, channels, p, q = weight.shape
        _, _, height, width = source
        target = g.const(reshape.input[1])
        if not isinstance(height, int) or not isinstance(width, int) or height % p or width % q or target is None:
            continue
        grid_h, grid_w = height // p, width // q
        if list(target[1:]) != [dim, grid_h * grid_w] or channels != source[1]:
            continue
        prefix = conv.name or conv.output[0]
        names = {k: f"{prefix}_patches_{k}" for k in ("split", "grid", "flat", "patches", "kernel", "mm")}
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array([0, channels, grid_h, p, grid_w, q], dtype=np.int64), names["split"]),
            numpy_helper.from_array(np.array([0, grid_h * grid_w, channels * p * q], dtype=np.int64), names["flat"]),
            numpy_helper.from_array(np.ascontiguousarray(weight.reshape(dim, -1).T), names["kernel"]),
        ])
        rewrite = [
            helper.make_node("Reshape", [conv.input[0], names["split"]], [names["grid"]]),
            helper.make_node("Transpose", [names["grid"]], [names["patches"]], perm=[0, 2, 4, 1, 3, 5]),
            helper.make_node("Reshape", [names["patches"], names["flat"]], [names["flat"] + "_out"]),
            helper.make_node("MatMul", [names["flat"] + "_out", names["kernel"]], [names["mm"]],
                             name=PATCH_EMBED_NODE),
            helper.make_node("Add", [names["mm"], conv.input[2]], [transpose.output[0]]),
        ]
        drop = {id(conv), id(reshape), id(transpose)}
        kept = [n for n in model.graph.node if id(n) not in drop] + rewrite
        del model.graph.node[:]
        model.graph.node.extend(_topological(kept, model.graph))
        _drop_unused_initializers(model)
        return 1
    return 0


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every value's shape onnx shape inference can give (dims as ints, or the symbol of a dynamic one)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):  # e.g. a model over 2 GB: then no rewrite
        return {}
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param
                                  for d in value.type.tensor_type.shape.dim]
    return shapes


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or a dangling input after attention fusion")
        pending = rest
    return ordered


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        counts[node.op_type] += 1
    return dict(counts)


def fuse_for_cpu(
    model: onnx.ModelProto, inputs: np.ndarray, names: tuple[str, ...] = ("tokens", "pooled")
) -> tuple[onnx.ModelProto, int]:
    """``(fused copy of model, attention blocks fused)`` (the patch embedding rewritten as a ``MatMul`` too), or
    ``(model, 0)`` when no attention block matched or onnxruntime
    gives the fused graph's outputs on ``inputs`` more than ``PARITY_ATOL`` away from the traced graph's."""
    from hjepa.export.verify import compare, cpu_session, ort_runner

    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    count = fuse_attention(fused)
    if not count:
        return model, 0
    fuse_patch_embed(fused)
    reference = ort_runner(cpu_session(model.SerializeToString()), names)(inputs)
    figures = compare(reference, ort_runner(cpu_session(fused.SerializeToString()), names)(inputs), names)
    if max(fig["max_abs_err"] for fig in figures.values()) > PARITY_ATOL:
        worst = max(fig["max_abs_err"] for fig in figures.values())
        warnings.warn(f"fused attention differs from the traced graph ({worst:.2g}); "
                      "keeping the traced graph", stacklevel=2)
        return model, 0
    return fused, count
