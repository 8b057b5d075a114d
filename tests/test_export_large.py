"""Models over protobuf's 2 GB limit keep their weights in ``level{K}.onnx.data``; every copy of the model must too.

The limit is lowered for the test so the tiny model takes the same path as a ViT-H would.
"""

from __future__ import annotations

import numpy as np
import pytest

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
