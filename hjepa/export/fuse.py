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
than the contrib op (q, k and v come in as three tensors instead of one packed projection).

Contrib ops run on onnxruntime only (CPU and CUDA), not in a TensorRT engine, so the fused graph is the
onnxruntime file of an export and never the source of an engine. A block that does not match exactly is left as
it is, and ``fuse_for_cpu`` keeps the fused graph only if onnxruntime gives the same outputs as the traced one.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
# Node types the traced attention of one block consists of; anything else in the matched region is not ours.
ATTENTION_OPS = {"MatMul", "Add", "Reshape", "Transpose", "Slice", "Squeeze", "Shape", "Concat", "Mul", "Softmax"}
PARITY_ATOL = 1e-4  # fused vs traced float32 graph; measured differences are ~1e-6


class _Graph:
    """Producer / consumer indices of a graph's nodes, and its initializers as arrays."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.outputs = {out.name for out in graph.output}

    def const(self, name: str) -> np.ndarray | None:
        init = self.initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)

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
    weight, bias, target = g.const(proj.input[1]), g.const(bias_name), g.const(out.input[1])
    if weight is None or bias is None or weight.shape != (hidden, 3 * hidden) or bias.shape != (3 * hidden,):
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


def fuse_attention(model: onnx.ModelProto) -> int:
    """Replace every matching attention block of ``model`` (in place) by ``com.microsoft.Attention``; returns how
    many were replaced. Unmatched blocks stay as traced; initializers nothing uses any more are dropped."""
    g = _Graph(model.graph)
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


def fuse_for_cpu(model: onnx.ModelProto, inputs: np.ndarray) -> tuple[onnx.ModelProto, int]:
    """``(fused copy of model, attention blocks fused)``, or ``(model, 0)`` when nothing matched or onnxruntime
    gives the fused graph's outputs on ``inputs`` more than ``PARITY_ATOL`` away from the traced graph's."""
    from hjepa.export.verify import compare, ort_runner, ort_session

    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    count = fuse_attention(fused)
    if not count:
        return model, 0
    reference = ort_runner(ort_session(model.SerializeToString()))(inputs)
    figures = compare(reference, ort_runner(ort_session(fused.SerializeToString()))(inputs))
    if max(fig["max_abs_err"] for fig in figures.values()) > PARITY_ATOL:
        warnings.warn(f"fused attention differs from the traced graph ({figures['tokens']['max_abs_err']:.2g}); "
                      "keeping the traced graph", stacklevel=2)
        return model, 0
    return fused, count
