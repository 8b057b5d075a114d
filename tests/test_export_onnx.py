"""ONNX export of every level of the tiny checkpoint: files, manifest, metadata, graph, dynamic batch, parity."""

from __future__ import annotations

import json
import stat

import numpy as np
import onnx
import pytest
import torch

from hjepa.data import EvalTransform, build_dataset, dataset_stats
from hjepa.export import METADATA_KEYS, ExportError, checked_level_encoder, export, manifest_dict, read_metadata
from hjepa.export.verify import compare, cpu_session
from hjepa.inference.artifacts.hashing import file_sha256
from hjepa.inference.artifacts.levels import LevelError
from hjepa.models.pos_embed import sincos_2d
from hjepa.train.checkpoint import load_checkpoint, load_model


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "digits"
    manifest = export(tiny_checkpoint, "all", out)
    return out, manifest


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)[0]


def digits_batch(count: int, img_size: int = 16) -> torch.Tensor:
    images, _ = build_dataset("digits", "test").tensors()
    return EvalTransform(img_size, *dataset_stats("digits"))(images[:count])


def test_one_self_contained_file_per_level_and_nothing_else(exported):
    out, _ = exported
    assert sorted(p.name for p in out.iterdir()) == ["level0.onnx", "level1.onnx", "manifest.json"]
    assert not list(out.parent.glob(".*")), "a staging folder was left behind"
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o044, f"{path.name} is not readable by others"
    # weights inside: loading without external data still gives every initializer its bytes
    model = onnx.load(str(out / "level0.onnx"), load_external_data=False)
    assert model.graph.initializer and all(
        init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    )


def test_manifest_records_source_config_and_verification(exported, tiny_checkpoint):
    out, manifest = exported
    assert manifest_dict(out) == manifest
    assert manifest["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert manifest["config"] == load_checkpoint(tiny_checkpoint)["config"]
    assert set(manifest["levels"]) == {"0", "1"}
    for level, entry in manifest["levels"].items():
        assert entry["onnx"] == f"level{level}.onnx" and entry["engine"] is None and entry["int8_knn"] is None
        check = entry["verification"]["onnxruntime"]
        assert check["passed"] and set(check["batches"]) == {"batch_1", "batch_4"}
        for figures in check["batches"].values():
            for name in ("tokens", "pooled"):
                assert figures[name]["max_abs_err"] < 1e-4
                assert figures[name]["min_cosine"] > 0.99999


def test_metadata_values(exported, tiny_checkpoint, model):
    out, manifest = exported
    mean, std = dataset_stats("digits")
    for level, grid in ((0, [4, 4]), (1, [2, 2])):
        onnx_model = onnx.load(str(out / f"level{level}.onnx"))
        raw = {p.key: p.value for p in onnx_model.metadata_props}
        assert set(METADATA_KEYS) <= set(raw)
        assert raw["precision"] == '"fp32"' and raw["level"] == str(level)  # JSON strings
        meta = read_metadata(onnx_model)
        assert meta == manifest["levels"][str(level)]["metadata"]
        assert meta["level"] == level and meta["num_levels"] == 2 and meta["grid"] == grid
        assert meta["img_size"] == 16 and meta["patch_size"] == 4 and meta["embed_dim"] == model.head_dim
        assert meta["mean"] == pytest.approx(mean) and meta["std"] == pytest.approx(std)
        assert meta["input_format"] == "float_nchw" and meta["dataset"] == "digits"
        assert meta["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
        assert not any(node.metadata_props for node in onnx_model.graph.node), "stack traces leaked into the file"


def test_graph_is_valid_with_a_symbolic_batch_axis(exported):
    out, _ = exported
    onnx_model = onnx.load(str(out / "level1.onnx"))
    onnx.checker.check_model(onnx_model, full_check=True)
    assert {op.version for op in onnx_model.opset_import if op.domain in ("", "ai.onnx")} == {20}
    (image,) = onnx_model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "images" and image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 16, 16]
    outputs = {o.name: o.type.tensor_type.shape.dim for o in onnx_model.graph.output}
    assert list(outputs) == ["tokens", "pooled"]
    assert outputs["tokens"][0].dim_param == "batch" and [d.dim_value for d in outputs["tokens"][1:]] == [4, 32]


@pytest.mark.parametrize("level", [0, 1])
def test_onnxruntime_matches_extract_features_at_batch_1_3_5(exported, model, level):
    out, _ = exported
    session = cpu_session(out / f"level{level}.onnx")
    for batch in (1, 3, 5):
        images = digits_batch(batch)
        tokens, pooled = model.extract_features(images, level)
        got = session.run(["tokens", "pooled"], {"images": images.numpy()})
        assert got[0].shape == (batch, 16 >> (2 * level), 32) and got[1].shape == (batch, 32)
        figures = compare([tokens.numpy(), pooled.numpy()], got)
        assert figures["tokens"]["max_abs_err"] < 1e-4 and figures["pooled"]["min_cosine"] > 0.9999


def test_level_encoder_equals_extract_features_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mean, std = dataset_stats("digits")
    images = digits_batch(4)
    for level in range(model.num_levels):
        tokens, pooled = checked_level_encoder(model, level, mean, std)(images)
        ref_tokens, ref_pooled = model.extract_features(images, level)
        torch.testing.assert_close(tokens, ref_tokens, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pooled, ref_pooled, atol=1e-6, rtol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_new_image_size_recomputes_sincos_positions(model):
    mean, std = dataset_stats("digits")
    encoder = checked_level_encoder(model, 1, mean, std, img_size=32)
    assert encoder.grid == (8, 8) and model.grid == (4, 4)
    torch.testing.assert_close(encoder.encoder.pos_embed[0], sincos_2d(32, (8, 8)))
    tokens, pooled = encoder(digits_batch(2, img_size=32))
    assert tokens.shape == (2, 16, 32) and pooled.shape == (2, 32) and torch.isfinite(tokens).all()
    with pytest.raises(ExportError, match=r"patch_size \* 2\^1 = 8"):
        checked_level_encoder(model, 1, mean, std, img_size=20)
    with pytest.raises(LevelError, match=r"available levels: \[0, 1\]"):
        checked_level_encoder(model, 2, mean, std)


def test_half_module_keeps_layernorm_in_float32(model):
    mean, std = dataset_stats("digits")
    half = checked_level_encoder(model, 0, mean, std, half=True)
    norms = [m for m in half.modules() if type(m).__name__ == "Float32LayerNorm"]
    assert len(norms) == 2 * 2 + 1 + 1  # two per block, the final norm, the level's target norm
    assert all(m.weight.dtype == torch.float32 for m in norms if m.weight is not None)
    assert half.encoder.vit.blocks[0].attn.qkv.weight.dtype == torch.float16
    images = digits_batch(3)
    tokens, pooled = half(images)
    ref_tokens, _ = model.extract_features(images, 0)
    assert tokens.dtype == torch.float32 and pooled.dtype == torch.float32
    assert (tokens - ref_tokens).abs().max() < 5e-2 and not torch.equal(tokens, ref_tokens)


def test_manifest_is_plain_json(exported):
    out, _ = exported
    text = (out / "manifest.json").read_text()
    data = json.loads(text)
    assert data["hjepa_version"] and data["created"].endswith("+00:00")
    figures = data["levels"]["0"]["verification"]["onnxruntime"]["batches"]["batch_1"]["tokens"]
    assert np.isfinite(figures["max_abs_err"]) and figures["max_abs_err"] < 1e-4


def test_torchscript_fallback_when_torch_export_fails(model, monkeypatch, tmp_path):
    from hjepa.export import onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("torch.export cannot capture this")

    monkeypatch.setattr(onnx_export, "_trace_dynamo", broken)
    mean, std = dataset_stats("digits")
    module = checked_level_encoder(model, 1, mean, std)
    with pytest.warns(UserWarning, match="TorchScript exporter"):
        onnx_model, exporter = onnx_export.trace_onnx(module, digits_batch(2), 20)
    assert exporter == "torchscript"
    path = onnx_export.save_onnx(onnx_model, tmp_path / "fallback.onnx")
    images = digits_batch(3)
    got = cpu_session(path).run(["tokens", "pooled"], {"images": images.numpy()})
    assert compare([t.numpy() for t in model.extract_features(images, 1)], got)["tokens"]["max_abs_err"] < 1e-4


def test_manifest_opset_is_the_files_when_the_fallback_lowers_it(tiny_checkpoint, monkeypatch, tmp_path):
    from hjepa.export import ExportOptions, export, onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("torch.export cannot capture this")

    monkeypatch.setattr(onnx_export, "_trace_dynamo", broken)
    with pytest.warns(UserWarning, match="TorchScript exporter"):
        manifest = export(tiny_checkpoint, 0, tmp_path / "exp", ExportOptions(opset=22))
    written = {o.domain: o.version for o in onnx.load(str(tmp_path / "exp" / "level0.onnx")).opset_import}[""]
    assert written == 20  # the TorchScript exporter stops at 20
    assert manifest["levels"]["0"]["exporter"] == "torchscript" and manifest["levels"]["0"]["opset"] == written
