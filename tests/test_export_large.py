"""Models over protobuf's 2 GB limit keep their weights in ``level{K}.onnx.data``; every copy of the model must too.

The limit is lowered for the test so the tiny model takes the same path as a ViT-H would.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch

from hjepa.export import ExportOptions, export, onnx_export
from hjepa.export.verify import cpu_session, sample_inputs


@pytest.fixture
def small_protobuf_limit(monkeypatch):
    monkeypatch.setattr(onnx_export, "_PROTOBUF_LIMIT", 10_000)


def run(session, inputs):
    return session.run(["tokens", "pooled"], {"images": inputs})


def test_triton_repository_carries_the_external_weights(tiny_checkpoint, tmp_path, small_protobuf_limit):
    out = tmp_path / "exp"
    manifest = export(tiny_checkpoint, 0, out, ExportOptions(formats=("onnx", "triton")))
    assert (out / "level0.onnx.data").is_file()
    sizes = (out / "level0.onnx").stat().st_size + (out / "level0.onnx.data").stat().st_size
    assert manifest["levels"]["0"]["onnx_bytes"] == sizes  # the weights count too
    version = out / "triton" / "hjepa_l0" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["level0.onnx.data", "model.onnx"]
    inputs = sample_inputs(2, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3)
    expected = run(cpu_session(out / "level0.onnx"), inputs)
    for got, want in zip(run(cpu_session(version / "model.onnx"), inputs), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_int8_of_an_external_data_model_leaves_no_stale_weights(tiny_checkpoint, tmp_path, small_protobuf_limit):
    out = tmp_path / "exp"
    manifest = export(tiny_checkpoint, 0, out, ExportOptions(int8=True, knn_train_samples=50, knn_test_samples=20))
    names = sorted(p.name for p in out.iterdir())
    # The int8 file replaced the fp32 one; the fp32 weights file must not be left behind, unreferenced.
    assert names in (["level0.onnx", "manifest.json"], ["level0.onnx", "level0.onnx.data", "manifest.json"])
    session = cpu_session(out / "level0.onnx")
    assert manifest["levels"]["0"]["metadata"]["precision"] == "int8"
    tokens, pooled = run(session, sample_inputs(2, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3))
    assert tokens.shape == (2, 16, 32) and np.isfinite(tokens).all()
    if "level0.onnx.data" in names:  # then the int8 model itself is the one that reads it
        import onnx
        from onnx.external_data_helper import uses_external_data

        model = onnx.load(str(out / "level0.onnx"), load_external_data=False)
        assert any(uses_external_data(t) for t in model.graph.initializer)


def write_wide_artifact(directory, width: int = 4096, depth: int = 3) -> None:
    """An imported-encoder artifact whose fp32 weights pass 2 GB (width 4096, depth 3: 604M parameters) while a
    32 px image is 4 tokens of compute. Random weights, scaled so activations stay O(1)."""
    import json

    from safetensors.torch import save_file

    from hjepa.inference.artifacts.artifact import ARTIFACT_FORMAT
    from hjepa.inference.artifacts.hashing import file_sha256
    from hjepa.models.pretrained import EncoderArchitecture, PretrainedEncoder

    arch = EncoderArchitecture(embed_dim=width, depth=depth, num_heads=width // 64, mlp_hidden_dim=4 * width,
                               patch_size=16, img_size=32, num_levels=1)
    with torch.device("meta"):  # no 2.4 GB initialisation pass: each tensor is drawn once below
        model = PretrainedEncoder(arch, "wide")
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, tensor in model.state_dict().items():
        fan_in = tensor.shape[-1] if tensor.ndim > 1 else 1
        value = torch.randn(tensor.shape, generator=generator) / fan_in**0.5 if tensor.ndim > 1 else (
            torch.ones(tensor.shape) if name.endswith("weight") else torch.zeros(tensor.shape))
        weights[name] = value
    directory.mkdir()
    save_file(weights, str(directory / "encoder.safetensors"), metadata={"format": ARTIFACT_FORMAT})
    del weights
    spec = {
        "format": ARTIFACT_FORMAT, "architecture": arch.to_dict(),
        "preprocessing": {"img_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
        "feature": {"levels": [0], "level_head": "identity"},
        "provenance": {"source": "synthetic", "source_sha256": "0" * 64, "config_name": "wide", "licence": None},
        "parity": None, "config": None, "weights_sha256": file_sha256(directory / "encoder.safetensors"),
    }
    (directory / "encoder.json").write_text(json.dumps(spec))


def test_a_model_over_2gb_exports_with_external_data_and_every_reader_opens_it(tmp_path):
    artifact, out = tmp_path / "wide", tmp_path / "exp"
    try:
        check_wide_export(artifact, out)
    finally:  # 4.8 GB: pytest keeps its last three temporary folders
        shutil.rmtree(artifact, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def check_wide_export(artifact, out) -> None:
    from hjepa.inference.artifacts.artifact import load_artifact
    from hjepa.inference.runtimes.open import open_runtime

    write_wide_artifact(artifact)
    assert (artifact / "encoder.safetensors").stat().st_size > onnx_export._PROTOBUF_LIMIT
    manifest = export(artifact, "all", out, ExportOptions(batch=2))
    entry = manifest["levels"]["0"]
    assert entry["fused_attention"] == 3  # fusion ran from paths on the weightless graph
    assert entry["onnx_bytes"] > onnx_export._PROTOBUF_LIMIT
    assert (out / "level0.onnx").stat().st_size < 20_000_000  # the graph alone: the weights are beside it
    assert sorted(p.name for p in out.iterdir()) == ["level0.onnx", "level0.onnx.data", "manifest.json"]
    images = sample_inputs(3, 32, "float_nchw", (0.5,) * 3, (0.25,) * 3, seed=7)
    runtime = open_runtime(out, backend="onnxruntime", device="cpu")  # what hjepa-eval and hjepa-serve open
    got = runtime.embed_preprocessed(images, 0)
    del runtime
    model = load_artifact(artifact).model
    with torch.no_grad():
        tokens, pooled = model.extract_levels(torch.from_numpy(images), [0])[0]
    np.testing.assert_allclose(got[0], tokens.numpy(), atol=2e-3, rtol=0)
    np.testing.assert_allclose(got[1], pooled.numpy(), atol=2e-3, rtol=0)


def test_simplify_and_fusion_of_an_external_data_model(tiny_checkpoint, tmp_path, small_protobuf_limit,
                                                       monkeypatch):
    pytest.importorskip("onnxslim")
    from google.protobuf.message import EncodeError

    def past_2gb(self):  # what protobuf does to a model over 2 GB: onnxslim's own size check must not run
        raise EncodeError("Failed to serialize proto")

    monkeypatch.setattr(onnx.ModelProto, "ByteSize", past_2gb)
    out = tmp_path / "exp"
    manifest = export(tiny_checkpoint, "all", out, ExportOptions(simplify=True))
    for level in ("0", "1"):
        entry = manifest["levels"][level]
        assert entry["simplified"] and entry["fused_attention"] == 2
        assert (out / f"level{level}.onnx.data").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no work folders left
    inputs = sample_inputs(2, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3)
    tokens, pooled = run(cpu_session(out / "level0.onnx"), inputs)
    assert tokens.shape == (2, 16, 32) and np.isfinite(pooled).all()


@pytest.fixture(scope="module")
def levels_export(tiny_checkpoint, tmp_path_factory):
    """Every level of the tiny checkpoint, per level and as the one graph levels.onnx: (folder, manifest)."""
    out = tmp_path_factory.mktemp("levels") / "exp"
    return out, export(tiny_checkpoint, "all", out, ExportOptions(formats=("levels",)))


def test_one_graph_for_all_levels_matches_the_per_level_files(levels_export):
    out, manifest = levels_export
    entry = manifest["all_levels"]
    assert entry["outputs"] == ["tokens_0", "pooled_0", "tokens_1", "pooled_1"] and entry["fused_attention"] == 2
    assert "levels.onnx" in manifest["files"]
    inputs = sample_inputs(3, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3, seed=5)
    together = cpu_session(out / "levels.onnx").run(entry["outputs"], {"images": inputs})
    for level in (0, 1):
        alone = run(cpu_session(out / f"level{level}.onnx"), inputs)
        for got, want in zip(together[2 * level : 2 * level + 2], alone, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_tensorrt_builds_from_an_external_data_onnx(tiny_checkpoint, tmp_path, monkeypatch, small_protobuf_limit):
    import functools
    import sys

    import onnx
    from onnx.external_data_helper import uses_external_data

    from hjepa.export import tensorrt_build as trt_build
    from tests.test_export_tensorrt import fake_tensorrt

    calls: list = []
    trt = fake_tensorrt("11.4.1", calls, runs=[])
    parse = trt.OnnxParser.parse_from_file

    def parse_with_weights(self, path):  # the stand-in engine runs the bytes it was given: weights included
        ok = parse(self, path)
        self.network.onnx = onnx.load(path).SerializeToString()
        return ok

    monkeypatch.setattr(trt.OnnxParser, "parse_from_file", parse_with_weights)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_build, "cuda_available", lambda: True)
    monkeypatch.setattr(trt_build, "gpu_info", lambda: {"gpu": "Stand-in GPU", "compute_capability": "9.0"})
    monkeypatch.setattr(trt_build, "EngineRunner", functools.partial(trt_build.EngineRunner, device="cpu"))
    out = tmp_path / "trt"
    manifest = export(tiny_checkpoint, 0, out, ExportOptions(formats=("trt",)))
    model = onnx.load(str(out / "level0.onnx"), load_external_data=False)
    assert any(uses_external_data(t) for t in model.graph.initializer)  # the engine was parsed from the split file
    assert ("parse", "images") in calls and manifest["levels"]["0"]["verification"]["tensorrt"]["passed"]


def test_eval_and_serve_read_levels_onnx_in_one_session(levels_export, tmp_path, monkeypatch):
    import json

    from hjepa.evaluation.run import evaluate
    from hjepa.inference.runtimes import runtime_onnx
    from hjepa.serve import open_runtime  # what hjepa-serve and hjepa-eval open sources with

    out = levels_export[0]
    apart = tmp_path / "per_level"  # the same export without its levels.onnx entry: one session per level
    shutil.copytree(out, apart)
    manifest = json.loads((apart / "manifest.json").read_text())
    del manifest["all_levels"]
    (apart / "manifest.json").write_text(json.dumps(manifest))
    opened = []
    real = runtime_onnx.ort_session
    monkeypatch.setattr(runtime_onnx, "ort_session", lambda path, providers: opened.append(path.name) or
                        real(path, providers))
    together, alone = open_runtime(out, "onnxruntime", "cpu"), open_runtime(apart, "onnxruntime", "cpu")
    assert opened == ["levels.onnx", "level0.onnx", "level1.onnx"]
    assert together.levels == alone.levels == [0, 1] and together.metadata == alone.metadata
    inputs = sample_inputs(3, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3, seed=7)
    both = together.embed_levels(inputs, [0, 1], with_tokens=True)
    for level in (0, 1):
        want = alone.embed_preprocessed(inputs, level)
        for got in (both[level], together.embed_preprocessed(inputs, level)):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)
    assert together.embed_levels(inputs, [1], with_tokens=False)[1][0] is None
    del opened[:]
    kwargs = dict(dataset="digits", protocols=("knn",), cache_dir=None, ks=[5], progress=False)
    one, per = evaluate(out, **kwargs), evaluate(apart, **kwargs)
    assert opened == ["levels.onnx", "level0.onnx", "level1.onnx"]
    for level in ("0", "1"):  # features within 1e-5: at most one of 360 test images may flip
        assert abs(one["levels"][level]["knn"]["5"]["top1"] - per["levels"][level]["knn"]["5"]["top1"]) <= 0.3


def test_a_large_level_frees_the_torch_model_before_onnxruntime_opens_it(
    tiny_checkpoint, tmp_path, monkeypatch, small_protobuf_limit
):
    import weakref

    from hjepa.export import external_data, source, verify
    from hjepa.export.formats import onnx as onnx_format

    models, modules = [], []  # weak references: alive only while something holds the weights

    def tracked_load(path, device):
        loaded = load(path, device)
        models.append(weakref.ref(loaded.model))
        return loaded

    def tracked_build(*args, **kwargs):
        module = build(*args, **kwargs)
        # The largest weight too: the exporter's graph (cached by onnxscript) once held the tensors themselves.
        modules.extend([weakref.ref(module), weakref.ref(max(module.parameters(), key=lambda p: p.numel()))])
        return module

    def counted_session(path, *args, **kwargs):
        alive.append(sum(ref() is not None for ref in models + modules))
        return session(path, *args, **kwargs)

    load, build, session, alive = source.load_source_model, onnx_format.build_level_encoder, verify.cpu_session, []
    monkeypatch.setattr(source, "load_source_model", tracked_load)
    monkeypatch.setattr(onnx_format, "build_level_encoder", tracked_build)
    for module in (verify, onnx_format, external_data):
        monkeypatch.setattr(module, "cpu_session", counted_session)
    export(tiny_checkpoint, "0,1", tmp_path / "exp", ExportOptions(int8=True, knn_train_samples=50,
                                                                   knn_test_samples=20))
    # Per level: the traced and fused graphs, fp32 and int8 verification (and the k-NN's two files in turn).
    assert len(alive) >= 8 and alive == [0] * len(alive)
    assert len(models) == 2  # level 1 read the model again


def _foldable_model(path):
    """y = x @ Transpose(W) + (a + b): the transpose and the sum fold into constants; weights stored externally."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "a"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    nodes = [helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("MatMul", ["x", "wt"], ["xw"]), helper.make_node("Add", ["xw", "ab"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    arrays = [numpy_helper.to_array(init) for init in inits]
    onnx.save_model(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    return arrays


def test_simplify_runs_onnxslims_passes_one_model_at_a_time(tmp_path, monkeypatch):
    """The pass-by-pass simplification gives onnxslim's own graph and outputs, stops once a pass changes nothing,
    and falls back to ``onnxslim.slim`` where onnxslim lays its passes out otherwise."""
    onnxslim = pytest.importorskip("onnxslim")
    core = pytest.importorskip("onnxslim.core")

    from hjepa.export import external_data

    path = tmp_path / "m.onnx"
    w, a, b = _foldable_model(path)
    calls = []
    optimize = core.optimize
    monkeypatch.setattr(core, "optimize", lambda model, *a: calls.append(1) or optimize(model, *a))
    slim = external_data._slim_in_passes(path)
    ops = [node.op_type for node in slim.graph.node]
    assert "Transpose" not in ops and len(ops) < 4  # folded (and, in onnxslim 0.1.98, fused into one Gemm)
    assert external_data._structure(slim) == external_data._structure(onnxslim.slim(str(path), no_shape_infer=True))
    assert 2 <= len(calls) < external_data.SLIM_PASSES  # a pass that changed nothing ended it

    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    want = cpu_session(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(want, x @ w.T + (a + b), rtol=1e-5, atol=1e-5)
    external_data.simplify_file(path, "m.onnx.data")
    np.testing.assert_allclose(cpu_session(path).run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
    assert "Transpose" not in [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]

    def moved(_path):
        raise ImportError("no onnxslim.core.optimize here")

    monkeypatch.setattr(external_data, "_slim_in_passes", moved)
    _foldable_model(path)
    external_data.simplify_file(path, "m.onnx.data")
    np.testing.assert_allclose(cpu_session(path).run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
    assert "Transpose" not in [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
