"""Serving runtimes: PyTorch on the tiny checkpoint, onnxruntime on test-made ONNX files, TensorRT on a stand-in."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import tensorrt_standin  # tests/tensorrt_standin.py: pytest puts tests/ (no __init__.py) on sys.path
import torch
import torch.nn as nn
from PIL import Image

from hjepa.inference import BACKENDS
from hjepa.inference.runtimes import runtime_tensorrt
from hjepa.inference.runtimes.runtime_onnx import choose_providers
from hjepa.serve import RuntimeSourceError, RuntimeUnavailableError, TorchRuntime, open_runtime
from hjepa.train.checkpoint import CheckpointError


def sample_images() -> list:
    """Three inputs in three forms and sizes: a PIL photo, a wide uint8 array, a grayscale array."""
    rng = np.random.default_rng(0)
    return [
        Image.open(Path(__file__).parents[1] / "hjepa/serve/examples/coffee.png"),
        rng.integers(0, 256, size=(20, 33, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(16, 16), dtype=np.uint8),
    ]


class LevelModule(nn.Module):
    """What the exporter exports: images -> (tokens, pooled) of one level, optionally normalising uint8 NHWC."""

    def __init__(self, model: nn.Module, level: int, mean, std, uint8: bool) -> None:
        super().__init__()
        self.model, self.level, self.uint8 = model, level, uint8
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.uint8:
            images = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        return self.model.extract_features(images, self.level)


def export_level(runtime: TorchRuntime, level: int, path: Path, uint8: bool = False, metadata: bool = True) -> dict:
    """Write ``path`` (an .onnx file with the exporter's names and metadata); returns the decoded metadata."""
    meta = runtime.metadata
    module = LevelModule(runtime.model, level, meta.mean, meta.std, uint8).eval()
    size = meta.img_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8) if uint8 else torch.zeros(2, 3, size, size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["images"],
            output_names=["tokens", "pooled"],
            dynamic_axes={"images": {0: "batch"}, "tokens": {0: "batch"}, "pooled": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    values = {
        "hjepa_version": "test",
        "level": level,
        "num_levels": meta.num_levels,
        "img_size": size,
        "patch_size": meta.patch_size,
        "grid": list(meta.grid(level)),
        "embed_dim": meta.embed_dims[level],
        "mean": list(meta.mean),
        "std": list(meta.std),
        "input_format": "uint8_nhwc" if uint8 else "float_nchw",
        "checkpoint_sha256": runtime.identity,
        "dataset": meta.dataset,
        "precision": "fp32",
    }
    if metadata:
        onnx.helper.set_model_props(model, {key: json.dumps(value) for key, value in values.items()})
    onnx.save(model, str(path))
    return values


@pytest.fixture(scope="module")
def torch_runtime(tiny_checkpoint) -> TorchRuntime:
    return open_runtime(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def export_dir(torch_runtime, tmp_path_factory) -> Path:
    """An export directory laid out as hjepa-export writes it: level{K}.onnx per level plus manifest.json."""
    out = tmp_path_factory.mktemp("export")
    levels = {}
    for level in torch_runtime.levels:
        metadata = export_level(torch_runtime, level, out / f"level{level}.onnx")
        levels[str(level)] = {"onnx": f"level{level}.onnx", "engine": None, "metadata": metadata}
    manifest = {"config": torch_runtime.config.to_dict(), "checkpoint_sha256": torch_runtime.identity, "levels": levels}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_torch_runtime_embeds_every_level_like_the_model(torch_runtime, tiny_checkpoint) -> None:
    assert torch_runtime.backend == "torch[cpu]"
    assert torch_runtime.levels == [0, 1]
    meta = torch_runtime.metadata
    assert (meta.img_size, meta.patch_size, meta.num_levels, meta.dataset) == (16, 4, 2, "digits")
    assert meta.grids == {0: (4, 4), 1: (2, 2)} and meta.embed_dims == {0: 32, 1: 32}
    images = sample_images()
    batch = torch.from_numpy(torch_runtime.preprocess(images))
    for level, count in ((0, 16), (1, 4)):
        tokens, pooled = torch_runtime.embed(images, level)
        assert tokens.shape == (3, count, 32) and pooled.shape == (3, 32)
        assert tokens.dtype == np.float32 and np.isfinite(tokens).all()
        expected_tokens, expected_pooled = torch_runtime.model.extract_features(batch, level)
        np.testing.assert_allclose(tokens, expected_tokens.numpy(), atol=1e-5)
        np.testing.assert_allclose(pooled, expected_pooled.numpy(), atol=1e-5)
        # Chunked in batches of one: the same numbers.
        _, chunked = torch_runtime.embed(images, level, batch_size=1)
        np.testing.assert_allclose(chunked, pooled, atol=1e-5)
    # A run directory opens the same checkpoint.
    run_dir = open_runtime(tiny_checkpoint.parent.parent, device="cpu")
    assert run_dir.identity == torch_runtime.identity


def test_preprocess_uses_the_metadata_mean_and_std(torch_runtime) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 51, 0
    out = torch_runtime.preprocess([image])
    assert out.shape == (1, 3, 16, 16) and out.dtype == np.float32
    mean, std = torch_runtime.metadata.mean, torch_runtime.metadata.std  # digits: 0.305 / 0.376 per channel
    for channel, value in enumerate((1.0, 0.2, 0.0)):
        np.testing.assert_allclose(out[0, channel], (value - mean[channel]) / std[channel], atol=1e-6)
    # Change the recorded stats and the preprocessing follows them.
    original = torch_runtime.metadata
    try:
        torch_runtime.metadata = dataclasses.replace(original, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
        out = torch_runtime.preprocess([image])
        np.testing.assert_allclose(out[0, :, 0, 0], [2.0, -0.6, -0.5], atol=1e-6)
    finally:
        torch_runtime.metadata = original


@pytest.mark.parametrize("uint8", [False, True], ids=["float_nchw", "uint8_nhwc"])
def test_onnx_file_matches_torch(torch_runtime, tmp_path, uint8) -> None:
    path = tmp_path / "level1.onnx"
    export_level(torch_runtime, 1, path, uint8=uint8)
    runtime = open_runtime(path, device="cpu")
    assert runtime.backend == "onnxruntime[CPUExecutionProvider]"
    assert runtime.levels == [1] and runtime.metadata.input_format == ("uint8_nhwc" if uint8 else "float_nchw")
    images = sample_images()
    tokens, pooled = runtime.embed(images, 1)
    expected_tokens, expected_pooled = torch_runtime.embed(images, 1)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-4)
    np.testing.assert_allclose(tokens, expected_tokens, atol=1e-4)
    with pytest.raises(ValueError, match=r"available levels: \[1\]"):
        runtime.embed(images, 0)


def test_export_directory_serves_every_level(torch_runtime, export_dir) -> None:
    runtime = open_runtime(export_dir, backend="onnxruntime:cpu")
    assert runtime.levels == [0, 1] and runtime.config is not None
    assert runtime.metadata.grids == torch_runtime.metadata.grids
    images = sample_images()
    for level in runtime.levels:
        np.testing.assert_allclose(runtime.embed(images, level)[1], torch_runtime.embed(images, level)[1], atol=1e-4)
    auto = open_runtime(export_dir)  # no TensorRT here: auto falls back to onnxruntime
    assert auto.backend.startswith("onnxruntime[")


def test_bad_sources_levels_and_backends_fail_clearly(torch_runtime, tiny_checkpoint, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_runtime(tmp_path / "missing.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RuntimeSourceError, match="not a model this app can serve"):
        open_runtime(tmp_path / "notes.txt")
    (tmp_path / "broken.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeSourceError, match="not a loadable ONNX model"):
        open_runtime(tmp_path / "broken.onnx")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        open_runtime(tmp_path / "broken.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeSourceError, match="neither manifest.json"):
        open_runtime(tmp_path / "empty")
    export_level(torch_runtime, 0, tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(RuntimeSourceError, match="no integer 'level'"):
        open_runtime(tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        open_runtime(tiny_checkpoint, backend="jax")
    with pytest.raises(ValueError, match="needs an export"):
        open_runtime(tiny_checkpoint, backend="onnxruntime")
    with pytest.raises(RuntimeUnavailableError, match="no CUDAExecutionProvider"):
        open_runtime(tmp_path / "bare.onnx", backend="onnxruntime:cuda")
    for level in (2, -1, "0", 0.5, True):
        with pytest.raises(ValueError, match=r"available levels: \[0, 1\]"):
            torch_runtime.embed(sample_images()[:1], level)


def test_provider_choice() -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, "auto", everything) == everything
    assert choose_providers(None, "cpu", everything) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", "auto", everything) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, "auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeUnavailableError, match="onnxruntime-gpu"):
        choose_providers(None, "cuda", ["CPUExecutionProvider"])
    assert set(BACKENDS) >= {"torch", "onnxruntime:cpu", "tensorrt"}


# TensorRT: tests/tensorrt_standin.py, whose engines are ONNX bytes run with onnxruntime on the buffers the shared
# EngineRunner binds through raw addresses, so the data path is exercised for real.
def write_engine(onnx_path: Path, engine_path: Path) -> None:
    engine_path.write_bytes(tensorrt_standin.engine_bytes(onnx_path.read_bytes(), "10.0-standin"))


@pytest.fixture
def standin_tensorrt(monkeypatch) -> list[int]:
    """The stand-in as ``tensorrt`` and CPU as the engines' device; returns the batch of each engine run."""
    runs: list[int] = []
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_standin.tensorrt_module(runs=runs))
    monkeypatch.setattr(runtime_tensorrt, "cuda_device", lambda device: torch.device("cpu"))
    return runs


def test_tensorrt_runtime_with_a_stand_in_module(torch_runtime, export_dir, tmp_path, standin_tensorrt) -> None:
    engine = tmp_path / "level0.engine"
    write_engine(export_dir / "level0.onnx", engine)
    metadata = json.loads((export_dir / "manifest.json").read_text())["levels"]["0"]["metadata"]
    (tmp_path / "level0.engine.json").write_text(json.dumps({"metadata": metadata, "tensorrt_version": "10"}))
    runtime = open_runtime(engine)
    assert runtime.backend == "tensorrt" and runtime.levels == [0] and runtime.max_batch == 4
    images = sample_images() * 2  # 6 images: chunks of 4 and 2, the profile's largest batch
    tokens, pooled = runtime.embed(images, 0)
    assert standin_tensorrt == [4, 2]
    expected_tokens, expected_pooled = torch_runtime.embed(images, 0)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-4)
    np.testing.assert_allclose(tokens, expected_tokens, atol=1e-4)
    # An export directory with engines listed in its manifest: auto picks TensorRT when it is usable.
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for level, entry in manifest["levels"].items():
        (tmp_path / f"level{level}.onnx").write_bytes((export_dir / entry["onnx"]).read_bytes())
        write_engine(export_dir / entry["onnx"], tmp_path / f"level{level}.engine")
        entry["engine"] = f"level{level}.engine"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    runtime = open_runtime(tmp_path)
    assert runtime.backend == "tensorrt" and runtime.levels == [0, 1]
    np.testing.assert_allclose(runtime.embed(images, 1)[1], torch_runtime.embed(images, 1)[1], atol=1e-4)
    # Bytes that are not an engine: a clear error, not a crash inside TensorRT.
    (tmp_path / "bad.engine").write_bytes(b"nonsense")
    (tmp_path / "bad.engine.json").write_text(json.dumps(metadata))
    with pytest.raises(RuntimeSourceError, match="could not deserialize"):
        open_runtime(tmp_path / "bad.engine")


def test_tensorrt_uint8_engine_gets_pixels(torch_runtime, tmp_path, standin_tensorrt) -> None:
    export_level(torch_runtime, 1, tmp_path / "level1.onnx", uint8=True)
    write_engine(tmp_path / "level1.onnx", tmp_path / "level1.engine")
    runtime = open_runtime(tmp_path / "level1.engine")  # metadata from the .onnx file beside it
    assert runtime.metadata.input_format == "uint8_nhwc" and runtime.runners[1].input_dtype == torch.uint8
    images = sample_images()
    tokens, pooled = runtime.embed(images, 1)
    expected_tokens, expected_pooled = torch_runtime.embed(images, 1)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-4)
    np.testing.assert_allclose(tokens, expected_tokens, atol=1e-4)
    assert standin_tensorrt == [3]


def test_tensorrt_engine_failures_keep_their_error_types(export_dir, tmp_path, standin_tensorrt, monkeypatch) -> None:
    (tmp_path / "level0.onnx").write_bytes((export_dir / "level0.onnx").read_bytes())  # the engine's metadata
    write_engine(tmp_path / "level0.onnx", tmp_path / "level0.engine")
    runtime = open_runtime(tmp_path / "level0.engine")
    batch = runtime.preprocess(sample_images() * 2)
    # A batch outside the engine's profile is a problem with the source (a ValueError the app shows the user) ...
    with pytest.raises(RuntimeSourceError, match=r"engine for level 0 rejects input shape \(6, 3, 16, 16\)"):
        runtime._forward(batch, 0)
    # ... a failed execution is not: a plain RuntimeError.
    monkeypatch.setattr(tensorrt_standin.Context, "execute_async_v3", lambda self, stream: False)
    with pytest.raises(RuntimeError, match="TensorRT execution failed for level 0") as failed:
        runtime.embed(sample_images(), 0)
    assert not isinstance(failed.value, ValueError) and standin_tensorrt == []


def test_tensorrt_missing_package_or_cuda_is_reported(export_dir, tmp_path, monkeypatch) -> None:
    engine = tmp_path / "level0.engine"
    engine.write_bytes(b"engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as on a machine without TensorRT
    with pytest.raises(RuntimeUnavailableError, match="'tensorrt' Python package"):
        open_runtime(engine)
    with pytest.raises(RuntimeUnavailableError, match="tensorrt"):
        open_runtime(export_dir, backend="tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_standin.tensorrt_module())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeUnavailableError, match="NVIDIA GPU with CUDA"):
        open_runtime(engine)
