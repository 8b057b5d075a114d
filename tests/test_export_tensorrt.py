"""TensorRT engines against stand-in ``tensorrt`` modules (API 10 and 11), plus real-engine tests.

The stand-in records every builder call, so the tests check what would be asked of TensorRT: the optimization
profile, the fp16 flag (10) vs the strongly typed path (11, where ``BuilderFlag.FP16`` no longer exists), the timing
cache round trip and the serialized engine on disk. Its engines run the ONNX file they were built from with
onnxruntime (``tests/tensorrt_standin.py``), so ``EngineRunner`` runs its real code on CPU buffers.
"""

from __future__ import annotations

import functools
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import tensorrt_standin  # tests/tensorrt_standin.py: pytest puts tests/ (no __init__.py) on sys.path
import torch

from hjepa.export import ExportError, ExportOptions, export
from hjepa.export import tensorrt_build as trt_build
from hjepa.export.verify import cpu_session, ort_runner, sample_inputs


def fake_tensorrt(
    version: str, calls: list, parse_ok: bool = True, build_ok: bool = True, runs: list | None = None
) -> types.ModuleType:
    """The stand-in runtime plus the slice of the builder API that ``build_engine`` uses, recording each call; its
    engines allow batches up to 64 (the default profile's largest) and append each run's batch to ``runs``."""
    trt = tensorrt_standin.tensorrt_module(version, max_batch=64, runs=runs)
    flags = {"TF32": 1, "DEBUG": 2} if version.startswith("11") else {"FP16": 0, "TF32": 1, "DEBUG": 2}
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")

    class Error:
        def desc(self):
            return "Unsupported operator Frobnicate"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            graph = onnx.load(path).graph  # the file handed over must be a real ONNX model
            calls.append(("parse", graph.input[0].name))
            self.network.onnx = Path(path).read_bytes()
            return parse_ok

        def get_error(self, index):
            return Error()

    class Profile:
        def set_shape(self, name, low, opt, high):
            calls.append(("profile", name, list(low), list(opt), list(high)))

    class Cache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return b"timings:" + self.blob

    class Config:
        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def add_optimization_profile(self, profile):
            calls.append(("add_profile",))

        def create_timing_cache(self, blob):
            calls.append(("create_timing_cache", bytes(blob)))
            return Cache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            calls.append(("set_timing_cache", ignore_mismatch))

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return types.SimpleNamespace(onnx=None)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build",))
            return tensorrt_standin.engine_bytes(network.onnx, version) if build_ok else None

    trt.OnnxParser, trt.Builder = OnnxParser, Builder
    return trt


@pytest.fixture(scope="module")
def onnx_file(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export(tiny_checkpoint, 1, out)
    return out / "level1.onnx"


@pytest.fixture
def no_gpu_info(monkeypatch):
    monkeypatch.setattr(trt_build, "gpu_info", lambda: {"gpu": "Stand-in GPU", "compute_capability": "9.0"})


@pytest.mark.parametrize("version", ["10.13.2", "11.4.1"])
def test_builder_calls_per_api_version(version, onnx_file, tmp_path, no_gpu_info):
    calls: list = []
    trt = fake_tensorrt(version, calls)
    cache = tmp_path / "timing.cache"
    info = trt_build.build_engine(trt, onnx_file, tmp_path / "e.engine", [3, 16, 16], (1, 8, 64), True, cache)
    assert ("parse", "images") in calls and ("create_network", 0) in calls and ("add_profile",) in calls
    assert ("profile", "images", [1, 3, 16, 16], [8, 3, 16, 16], [64, 3, 16, 16]) in calls
    assert ("create_timing_cache", b"") in calls and ("set_timing_cache", False) in calls
    flag_calls = [c for c in calls if c[0] == "set_flag"]
    if version.startswith("10"):
        assert flag_calls == [("set_flag", trt.BuilderFlag.FP16)]
        assert info["strongly_typed"] is False and info["fp16_from"] == "BuilderFlag.FP16"
    else:  # 11: no precision flags exist; fp16 comes from the ONNX graph
        assert flag_calls == [] and info["strongly_typed"] is True and info["fp16_from"] == "onnx graph"
    assert (tmp_path / "e.engine").read_bytes() == tensorrt_standin.engine_bytes(onnx_file.read_bytes(), version)
    assert cache.read_bytes() == b"timings:"
    assert info["tensorrt_version"] == version and info["api_major"] == int(version.split(".")[0])
    assert info["profile"] == {"input": "images", "min": [1, 3, 16, 16], "opt": [8, 3, 16, 16],
                               "max": [64, 3, 16, 16]}
    assert info["gpu"] == "Stand-in GPU" and info["compute_capability"] == "9.0"


def test_fp32_build_sets_no_precision_flag_and_reuses_the_timing_cache(onnx_file, tmp_path, no_gpu_info):
    calls: list = []
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    trt_build.build_engine(fake_tensorrt("10.9.0", calls), onnx_file, tmp_path / "e.engine", [3, 16, 16],
                           (2, 2, 2), False, cache, workspace_bytes=1 << 20)
    assert not [c for c in calls if c[0] == "set_flag"]
    assert ("create_timing_cache", b"old") in calls and cache.read_bytes() == b"timings:old"
    assert ("profile", "images", [2, 3, 16, 16], [2, 3, 16, 16], [2, 3, 16, 16]) in calls
    assert ("pool", "workspace", 1 << 20) in calls


@pytest.mark.parametrize(
    ("kwargs", "profile", "message"),
    [({"parse_ok": False}, (1, 8, 64), "cannot parse level1.onnx: Unsupported operator Frobnicate"),
     ({"build_ok": False}, (1, 8, 64), "failed to build an engine"),
     ({}, (8, 1, 64), "1 <= min <= opt <= max")],
)
def test_build_failures_are_export_errors(onnx_file, tmp_path, no_gpu_info, kwargs, profile, message):
    trt = fake_tensorrt("11.0.0", [], **kwargs)
    with pytest.raises(ExportError, match=message):
        trt_build.build_engine(trt, onnx_file, tmp_path / "e.engine", [3, 16, 16], profile, False,
                               tmp_path / "c.cache")
    assert not (tmp_path / "e.engine").exists()


def test_require_tensorrt_names_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(trt_build, "cuda_available", lambda: False)
    with pytest.raises(ExportError, match=r"has neither.*pip install tensorrt.*hjepa\[gpu\]"):
        trt_build.require_tensorrt()
    monkeypatch.setattr(trt_build, "cuda_available", lambda: True)
    with pytest.raises(ExportError, match=r"TensorRT, which is not installed: install it with pip install tensorrt"):
        trt_build.require_tensorrt()
    fake = fake_tensorrt("11.4.1", [])
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    assert trt_build.require_tensorrt() is fake
    monkeypatch.setattr(trt_build, "cuda_available", lambda: False)
    with pytest.raises(ExportError, match=r"needs an NVIDIA GPU.*is_available\(\) is False \(TensorRT is installed\)"):
        trt_build.require_tensorrt()


def test_trt_and_triton_export_through_the_standin(tiny_checkpoint, tmp_path, monkeypatch, no_gpu_info):
    calls: list = []
    runs: list[int] = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.1", calls, runs=runs))
    monkeypatch.setattr(trt_build, "cuda_available", lambda: True)
    # The real runner, on CPU buffers: the only thing a machine without a GPU changes.
    monkeypatch.setattr(trt_build, "EngineRunner", functools.partial(trt_build.EngineRunner, device="cpu"))
    out = tmp_path / "trt"
    manifest = export(tiny_checkpoint, 1, out, ExportOptions(formats=("trt", "triton"), half=True))
    entry = manifest["levels"]["1"]
    assert entry["exporter"] == "dynamo"  # standing in a GPU for tensorrt_build only must not disturb tracing
    assert entry["engine"] == "level1.engine" and entry["profile_batches"] == [1, 8, 64]
    check = entry["verification"]["tensorrt"]
    assert check["against"] == "onnxruntime" and check["passed"]
    # The engine ran once per verified batch and gave onnxruntime's numbers back through the buffers it bound.
    assert runs == [1, 4] and list(check["batches"]) == ["batch_1", "batch_4"]
    assert all(figures["max_abs_err"] < 1e-5 for batch in check["batches"].values() for figures in batch.values())
    sidecar = json.loads((out / "level1.engine.json").read_text())
    assert sidecar["tensorrt_version"] == "11.4.1" and sidecar["fp16"] and sidecar["strongly_typed"]
    assert sidecar["profile"]["max"] == [64, 3, 16, 16] and sidecar["verification"]["passed"]
    assert (out / "tensorrt.timing.cache").read_bytes() == b"timings:"
    plan = out / "triton" / "hjepa_l1" / "1" / "model.plan"
    assert plan.read_bytes() == (out / "level1.engine").read_bytes()
    config = (out / "triton" / "hjepa_l1" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "kind: KIND_GPU" in config and "max_batch_size: 64" in config
    # a second export into the same folder starts from the previous timing cache
    export(tiny_checkpoint, 1, out, ExportOptions(formats=("trt",), half=True))
    assert ("create_timing_cache", b"timings:") in calls
    assert (out / "tensorrt.timing.cache").read_bytes() == b"timings:timings:"


@pytest.fixture
def engine_file(onnx_file, tmp_path, no_gpu_info):
    """level1.engine built by the 10.x stand-in from the tiny checkpoint's level-1 ONNX file."""
    path = tmp_path / "level1.engine"
    trt_build.build_engine(fake_tensorrt("10.13.2", []), onnx_file, path, [3, 16, 16], (1, 8, 64), False,
                           tmp_path / "c.cache")
    return path


def test_engine_runner_matches_onnxruntime(onnx_file, engine_file):
    runs: list[int] = []
    runner = trt_build.EngineRunner(fake_tensorrt("10.13.2", [], runs=runs), engine_file, device="cpu")
    assert runner.input_dtype == torch.float32 and runner.max_batch == 64 and runner.outputs == ["tokens", "pooled"]
    reference = ort_runner(cpu_session(onnx_file))
    for batch in (1, 3):
        images = sample_inputs(batch, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3, seed=batch)
        tokens, pooled = runner(images)
        assert tokens.shape == (batch, 4, 32) and pooled.shape == (batch, 32) and tokens.dtype == np.float32
        expected_tokens, expected_pooled = reference(images)
        np.testing.assert_allclose(tokens, expected_tokens, atol=1e-5)
        np.testing.assert_allclose(pooled, expected_pooled, atol=1e-5)
    assert runs == [1, 3]


def test_engine_runner_errors_name_the_engine(engine_file, monkeypatch):
    trt = fake_tensorrt("10.13.2", [])
    with pytest.raises(ExportError, match=r"could not deserialize .*level1\.engine: .*another TensorRT version"):
        trt_build.EngineRunner(fake_tensorrt("11.4.1", []), engine_file, device="cpu")  # built by 10.13.2
    runner = trt_build.EngineRunner(trt, engine_file, device="cpu")
    images = sample_inputs(65, 16, "float_nchw", (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ExportError, match=r"engine for level1\.engine rejects input shape \(65, 3, 16, 16\)"):
        runner(images)  # the profile stops at 64
    monkeypatch.setattr(tensorrt_standin.Context, "execute_async_v3", lambda self, stream: False)
    with pytest.raises(ExportError, match=r"TensorRT execution failed for level1\.engine"):
        runner(images[:2])
    # The serving runtime's error types and label go through the same checks.
    with pytest.raises(RuntimeError, match="TensorRT execution failed for level 1") as failed:
        trt_build.EngineRunner(trt, engine_file, device="cpu", label="level 1", run_error=RuntimeError)(images[:2])
    assert type(failed.value) is RuntimeError
    with pytest.raises(ValueError, match="engine for level 1 rejects input shape"):
        trt_build.EngineRunner(trt, engine_file, device="cpu", label="level 1", source_error=ValueError)(images)
    monkeypatch.setattr(tensorrt_standin.Engine, "get_tensor_dtype", lambda self, name: tensorrt_standin.DataType.FP8)
    with pytest.raises(ExportError, match="engine tensor 'images' has unsupported dtype FP8"):
        trt_build.EngineRunner(trt, engine_file, device="cpu")


def test_engine_runner_refuses_an_engine_without_hjepa_tensors(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "identity.engine"
    path.write_bytes(tensorrt_standin.engine_bytes(model.SerializeToString(), "11.4.1"))
    with pytest.raises(ExportError, match=r"identity\.engine has tensors \['x', 'y'\]; expected 'images', 'tokens'"):
        trt_build.EngineRunner(fake_tensorrt("11.4.1", []), path, device="cpu")


def _real_tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.tensorrt
@pytest.mark.skipif(not _real_tensorrt_available(), reason="needs TensorRT and an NVIDIA GPU")
@pytest.mark.parametrize("half", [False, True])
def test_real_engine_matches_onnxruntime(tiny_checkpoint, tmp_path, half):
    manifest = export(tiny_checkpoint, 0, tmp_path, ExportOptions(formats=("trt",), half=half))
    check = manifest["levels"]["0"]["verification"]["tensorrt"]
    assert check["passed"] and check["batches"]["batch_4"]["pooled"]["min_cosine"] > 0.999
    assert json.loads((tmp_path / "level0.engine.json").read_text())["gpu"]
