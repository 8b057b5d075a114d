"""CPU graph fusion (``hjepa.export.fuse``): one contrib Attention per block, parity, fallbacks, int8 QAttention."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from hjepa.data import EvalTransform, build_dataset, dataset_stats
from hjepa.export import checked_level_encoder, export_level
from hjepa.export import fuse as fuse_module
from hjepa.export.fuse import PATCH_EMBED_NODE, fuse_attention, fuse_for_cpu, fuse_patch_embed, op_counts
from hjepa.export.onnx_export import save_onnx, trace_onnx
from hjepa.export.quantize import quantize_int8
from hjepa.export.verify import compare, cpu_session
from hjepa.train.checkpoint import load_model


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)[0]


@pytest.fixture(scope="module")
def traced(model):
    module = checked_level_encoder(model, 0, *dataset_stats("digits"))
    return trace_onnx(module, images(2), 20)[0]


def images(count: int) -> torch.Tensor:
    pixels, _ = build_dataset("digits", "test").tensors()
    return EvalTransform(16, *dataset_stats("digits"))(pixels[:count])


def attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]


def test_export_writes_one_fused_attention_per_block_matching_pytorch(tiny_checkpoint, tmp_path, model):
    entry = export_level(tiny_checkpoint, 0, tmp_path / "fp32")
    onnx_model = onnx.load(str(tmp_path / "fp32" / entry["onnx"]))
    depth = len(model.target_encoder.vit.blocks)
    nodes = attention_nodes(onnx_model)
    assert entry["fused_attention"] == depth == len(nodes) and entry["patch_embed_matmul"]
    counts = op_counts(onnx_model)
    assert "Softmax" not in counts and "Slice" not in counts and "Conv" not in counts
    assert counts["MatMul"] == 3 * depth + 1  # proj, fc1, fc2 per block; the patch embedding
    heads = model.target_encoder.vit.blocks[0].attn.num_heads
    assert all(next(a.i for a in n.attribute if a.name == "num_heads") == heads for n in nodes)
    batch = images(5)
    got = cpu_session(tmp_path / "fp32" / entry["onnx"]).run(["tokens", "pooled"], {"images": batch.numpy()})
    figures = compare([t.numpy() for t in model.extract_features(batch, 0)], got)
    assert figures["tokens"]["max_abs_err"] < 1e-4 and figures["pooled"]["min_cosine"] > 0.99999


def test_a_block_with_another_softmax_scale_is_left_unfused(traced):
    broken = onnx.ModelProto()
    broken.CopyFrom(traced)
    # Give the first block its own copy of the q-side scale, doubled: the block no longer computes 1/sqrt(hd).
    softmax = next(n for n in broken.graph.node if n.op_type == "Softmax")
    scores = next(n for n in broken.graph.node if softmax.input[0] in n.output)
    mul = next(n for n in broken.graph.node if scores.input[0] in n.output and n.op_type == "Mul")
    scale = onnx.numpy_helper.to_array(next(i for i in broken.graph.initializer if i.name == mul.input[1]))
    broken.graph.initializer.append(onnx.numpy_helper.from_array(scale * 2, "doubled_scale"))
    mul.input[1] = "doubled_scale"
    depth = op_counts(traced)["Softmax"]
    assert fuse_attention(broken) == depth - 1
    assert op_counts(broken)["Softmax"] == 1


def test_parity_failure_keeps_the_traced_graph(traced, monkeypatch):
    monkeypatch.setattr(fuse_module, "PARITY_ATOL", -1.0)
    with pytest.warns(UserWarning, match="keeping the traced graph"):
        kept, count = fuse_for_cpu(traced, images(2).numpy())
    assert count == 0 and kept is traced and not attention_nodes(kept)


def test_int8_of_the_fused_graph_quantizes_the_qkv_projection(traced, tmp_path, model):
    fused, count = fuse_for_cpu(traced, images(2).numpy())
    assert count == 2 and not attention_nodes(traced)  # the input graph is not modified
    save_onnx(fused, tmp_path / "fp32.onnx")
    assert quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx") == 2 * 4  # qkv (Attention), proj, fc1, fc2
    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    counts = op_counts(int8)
    assert counts["QAttention"] == 2 and "Attention" not in counts
    patch = next(n for n in int8.graph.node if n.name == PATCH_EMBED_NODE)  # raw pixels: left in float
    assert patch.op_type == "MatMul" and any(i.name == patch.input[1] and i.data_type == onnx.TensorProto.FLOAT
                                             for i in int8.graph.initializer)
    batch = images(8)
    got = cpu_session(tmp_path / "int8.onnx").run(["tokens", "pooled"], {"images": batch.numpy()})
    figures = compare([t.numpy() for t in model.extract_features(batch, 0)], got)
    assert figures["pooled"]["min_cosine"] > 0.99 and figures["tokens"]["max_abs_err"] > 1e-6  # close, not identical


def test_int8_without_the_quantizers_model_copy_is_the_same_file(traced, tmp_path, monkeypatch):
    from contextlib import nullcontext

    from hjepa.export import quantize

    fused, _ = fuse_for_cpu(traced, images(2).numpy())
    save_onnx(fused, tmp_path / "fp32.onnx")
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "lean.onnx")  # shapes refreshed in place (ViT-H: 5 GB less)
    monkeypatch.setattr(quantize, "_lean_shape_refresh", nullcontext)
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "copied.onnx")  # onnxruntime's own deep copy and reload
    lean, copied = (onnx.load(str(tmp_path / f"{name}.onnx")) for name in ("lean", "copied"))
    assert lean.graph.node == copied.graph.node
    weights = [{i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer} for m in (lean, copied)]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert {v.name for v in lean.graph.value_info} == {v.name for v in copied.graph.value_info}


def test_half_is_not_fused_and_a_torchscript_graph_stays_correct(tiny_checkpoint, tmp_path, model):
    entry = export_level(tiny_checkpoint, 1, tmp_path / "half", half=True)
    assert entry["fused_attention"] == 0 and not entry["patch_embed_matmul"]
    assert not attention_nodes(onnx.load(str(tmp_path / "half" / entry["onnx"])))
    # The TorchScript fallback traces attention differently; whatever matches there must still give the same outputs.
    from hjepa.export.onnx_export import _trace_torchscript

    module = checked_level_encoder(model, 0, *dataset_stats("digits"))
    script = _trace_torchscript(module, images(2), 20, True)
    fused, _ = fuse_for_cpu(script, images(2).numpy())
    batch = images(3)
    got = cpu_session(fused.SerializeToString()).run(["tokens", "pooled"], {"images": batch.numpy()})
    assert compare([t.numpy() for t in model.extract_features(batch, 0)], got)["tokens"]["max_abs_err"] < 1e-4


def test_patch_embedding_becomes_one_matmul_with_the_same_outputs(traced):
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(traced)
    assert fuse_patch_embed(rewritten) == 1
    assert "Conv" not in op_counts(rewritten) and op_counts(rewritten)["MatMul"] == op_counts(traced)["MatMul"] + 1
    onnx.checker.check_model(rewritten, full_check=True)
    batch = images(5).numpy()  # a batch size the trace never saw: the rewrite keeps the batch axis dynamic
    want = cpu_session(traced.SerializeToString()).run(["tokens", "pooled"], {"images": batch})
    got = cpu_session(rewritten.SerializeToString()).run(["tokens", "pooled"], {"images": batch})
    assert compare(want, got)["tokens"]["max_abs_err"] < 1e-5


def test_a_convolution_that_is_not_a_patch_embedding_is_left_alone(traced):
    overlapping = onnx.ModelProto()
    overlapping.CopyFrom(traced)
    conv = next(n for n in overlapping.graph.node if n.op_type == "Conv")
    strides = next(a for a in conv.attribute if a.name == "strides")
    strides.ints[:] = [s // 2 or 1 for s in strides.ints]  # overlapping windows: not a matmul over patches
    assert fuse_patch_embed(overlapping) == 0 and op_counts(overlapping)["Conv"] == 1
