"""Export options: --static, --int8 (+ k-NN), --half, --uint8-input, opset 23 + --simplify."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from hjepa.config import load_config
from hjepa.data import EvalTransform, build_dataset, dataset_stats
from hjepa.export import ExportOptions, export_level, read_metadata
from hjepa.export.quantize import int8_knn
from hjepa.export.verify import compare, cpu_session
from hjepa.train.checkpoint import load_model


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)[0]


@pytest.fixture(scope="module")
def static_fp32(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("static")
    entry = export_level(tiny_checkpoint, 0, out, dynamic=False, batch=2)
    return out / entry["onnx"], entry


def digits(count: int) -> torch.Tensor:
    images, _ = build_dataset("digits", "test").tensors()
    return images[:count]  # uint8 [B, 1, 8, 8]


def test_static_export_has_a_fixed_batch(static_fp32, model):
    path, entry = static_fp32
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 16, 16] and not dims[0].dim_param
    assert entry["dynamic_batch"] is False and entry["batch"] == 2
    assert set(entry["verification"]["onnxruntime"]["batches"]) == {"batch_2"}
    session = cpu_session(path)
    images = EvalTransform(16, *dataset_stats("digits"))(digits(3))
    tokens = session.run(["tokens"], {"images": images[:2].numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(tokens), model.extract_features(images[:2], 0)[0], atol=1e-4, rtol=0)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(["tokens"], {"images": images.numpy()})  # batch 3 into a batch-2 graph


def test_int8_is_smaller_close_and_reports_knn(tiny_checkpoint, tmp_path, static_fp32, model):
    entry = export_level(tiny_checkpoint, 0, tmp_path / "int8", int8=True)
    path = tmp_path / "int8" / entry["onnx"]
    assert path.stat().st_size < 0.7 * static_fp32[0].stat().st_size
    onnx_model = onnx.load(str(path))
    assert "MatMulInteger" in {node.op_type for node in onnx_model.graph.node}
    assert read_metadata(onnx_model)["precision"] == "int8" and entry["metadata"]["precision"] == "int8"
    assert {"onnxruntime", "onnxruntime_fp32"} <= set(entry["verification"])
    knn = entry["int8_knn"]
    # 5,000 / 2,000 images by default: here the whole digits splits
    assert knn["dataset"] == "digits" and knn["train_samples"] == 1437 and knn["test_samples"] == 360
    assert 0 <= knn["int8_top1"] <= 100 and 0 <= knn["fp32_top1"] <= 100
    assert knn["delta_top1"] == pytest.approx(knn["int8_top1"] - knn["fp32_top1"])
    # independent check of the quantized file against the PyTorch model on real digits
    images = EvalTransform(16, *dataset_stats("digits"))(digits(8))
    got = cpu_session(path).run(["tokens", "pooled"], {"images": images.numpy()})
    figures = compare([t.numpy() for t in model.extract_features(images, 0)], got)
    assert figures["pooled"]["min_cosine"] > 0.99 and figures["tokens"]["max_abs_err"] > 1e-6  # close, not identical


def test_int8_knn_records_an_unavailable_dataset_instead_of_failing(tmp_path):
    cfg = load_config("digits-debug", ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'missing'}"])
    result = int8_knn(None, None, cfg, {"img_size": 16, "input_format": "float_nchw"})
    assert result["dataset"] == "imagefolder" and "missing" in result["skipped"]


def test_half_has_fp16_weights_fp32_layernorm_and_io(tiny_checkpoint, tmp_path, static_fp32, model):
    entry = export_level(tiny_checkpoint, 1, tmp_path, half=True)
    path = tmp_path / entry["onnx"]
    onnx_model = onnx.load(str(path))
    assert entry["metadata"]["precision"] == "fp16"
    assert path.stat().st_size < 0.7 * static_fp32[0].stat().st_size
    init_types = {init.name: init.data_type for init in onnx_model.graph.initializer}
    matmul_weights = [n.input[1] for n in onnx_model.graph.node if n.op_type == "MatMul" and n.input[1] in init_types]
    assert matmul_weights and all(init_types[w] == onnx.TensorProto.FLOAT16 for w in matmul_weights)
    norm_scales = [n.input[1] for n in onnx_model.graph.node if n.op_type == "LayerNormalization"]
    assert norm_scales and all(init_types.get(s, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for s in norm_scales)
    assert onnx_model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in onnx_model.graph.output)
    images = EvalTransform(16, *dataset_stats("digits"))(digits(5))
    got = cpu_session(path).run(["tokens", "pooled"], {"images": images.numpy()})
    figures = compare([t.numpy() for t in model.extract_features(images, 1)], got)
    assert figures["tokens"]["max_abs_err"] < 5e-2 and figures["tokens"]["min_cosine"] > 0.999
    assert figures["tokens"]["max_abs_err"] > 1e-6  # really computed in fp16


def test_uint8_input_equals_the_float_path_on_the_same_images(tiny_checkpoint, tmp_path, static_fp32):
    entry = export_level(tiny_checkpoint, 0, tmp_path, uint8_input=True)
    path = tmp_path / entry["onnx"]
    graph = onnx.load(str(path)).graph
    graph_input = graph.input[0].type.tensor_type
    assert graph_input.elem_type == onnx.TensorProto.UINT8
    assert not any(n.op_type == "Conv" for n in graph.node)  # the patch embedding after the in-graph normalisation
    assert [d.dim_value for d in graph_input.shape.dim[1:]] == [16, 16, 3]
    assert entry["metadata"]["input_format"] == "uint8_nhwc"
    rgb = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    floats = EvalTransform(16, *dataset_stats("digits"))(rgb).numpy()
    expected = cpu_session(static_fp32[0]).run(["tokens", "pooled"], {"images": floats})
    got = cpu_session(path).run(["tokens", "pooled"], {"images": rgb.permute(0, 2, 3, 1).contiguous().numpy()})
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)


def test_opset_23_with_simplify(tiny_checkpoint, tmp_path):
    entry = export_level(tiny_checkpoint, 1, tmp_path, opset=23, simplify=True)
    onnx_model = onnx.load(str(tmp_path / entry["onnx"]))
    assert {op.version for op in onnx_model.opset_import if op.domain in ("", "ai.onnx")} == {23}
    assert entry["simplified"] and entry["opset"] == 23 and read_metadata(onnx_model)["level"] == 1
    assert entry["verification"]["onnxruntime"]["batches"]["batch_4"]["tokens"]["max_abs_err"] < 1e-4


def test_options_are_validated_before_any_work():
    from hjepa.export import ExportError

    for options, message in [
        (ExportOptions(half=True, int8=True), "exclude each other"),
        (ExportOptions(int8=True, formats=("trt",)), "TensorRT cannot run"),
        (ExportOptions(formats=("tflite",)), "unknown format 'tflite'"),
        (ExportOptions(opset=17), "opset 17 is not supported"),
        (ExportOptions(batch=0), "--batch must be at least 1"),
    ]:
        with pytest.raises(ExportError, match=message):
            options.validate()


def test_static_int8_measures_knn_in_batches_of_its_fixed_size(tiny_checkpoint, tmp_path):
    # The k-NN check embeds the dataset in chunks; a fixed-batch graph takes only chunks of its own batch (3 here,
    # which divides neither split: the last chunk is padded).
    entry = export_level(tiny_checkpoint, 0, tmp_path / "int8", dynamic=False, batch=3, int8=True,
                         knn_train_samples=100, knn_test_samples=40)
    knn = entry["int8_knn"]
    assert "skipped" not in knn and knn["train_samples"] == 100 and knn["test_samples"] == 40
    assert 0 <= knn["int8_top1"] <= 100 and abs(knn["delta_top1"]) <= 10
