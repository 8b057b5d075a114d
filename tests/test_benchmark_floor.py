"""benchmarks/gemm_floor.py: the weight products it times are the level's own, and its graph computes them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import torch

from hjepa.config import load_config
from hjepa.data import dataset_stats
from hjepa.export import checked_level_encoder
from hjepa.export.fuse import PATCH_EMBED_NODE
from hjepa.export.verify import cpu_session
from hjepa.train.model import build_training_model

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from gemm_floor import floor_model, floor_runner, save_floor_models, weight_gemms  # noqa: E402


def level_encoder(level: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_training_model(load_config("digits-debug")).eval()  # width 32, 2 blocks, 16 px, patch 4 (4x4 grid)
    return checked_level_encoder(model, level, *dataset_stats("digits"))


def test_weight_gemms_are_the_patch_embedding_and_every_block_linear() -> None:
    module = level_encoder(1)
    gemms = weight_gemms(module, torch.randn(3, 3, 16, 16))
    assert len(gemms) == 1 + sum(isinstance(m, torch.nn.Linear) for m in module.modules())
    block = [("linear", 16, 32, 96), ("linear", 16, 32, 32), ("linear", 16, 32, 128), ("linear", 16, 128, 32)]
    assert gemms == [("patch_embed", 16, 3 * 4 * 4, 32), *block, *block]  # qkv, projection, MLP in, MLP out


def test_floor_graph_computes_each_product_and_int8_keeps_the_patch_embedding_float(tmp_path) -> None:
    gemms = [("patch_embed", 16, 48, 32), ("linear", 16, 32, 96), ("linear", 16, 32, 32)]
    model = floor_model(gemms)
    weights = {w.name: onnx.numpy_helper.to_array(w) for w in model.graph.initializer}
    assert [n.name for n in model.graph.node][0] == PATCH_EMBED_NODE
    assert [i.name for i in model.graph.input] == ["x_16_48", "x_16_32"]  # one shared input per activation shape
    session = cpu_session(_save(model, tmp_path / "floor.onnx"), 1)
    feeds = {"x_16_48": np.ones((2, 16, 48), np.float32), "x_16_32": np.full((2, 16, 32), 0.5, np.float32)}
    for out, (_, _, fan_in, _), i in zip(session.run(None, feeds), gemms, range(3), strict=True):
        np.testing.assert_allclose(out, feeds[f"x_16_{fan_in}"] @ weights[f"w{i}"], rtol=1e-5, atol=1e-5)
    run = floor_runner(session)
    run(np.zeros((5, 3, 16, 16), np.float32))  # binds inputs and outputs for batch 5 and runs
    fp32, int8, summary = save_floor_models(level_encoder(0), torch.randn(2, 3, 16, 16), tmp_path)
    assert summary["products"] == len(onnx.load(str(fp32)).graph.node)
    quantized = onnx.load(str(int8)).graph.node
    assert [n.op_type for n in quantized if n.name == PATCH_EMBED_NODE] == ["MatMul"]
    assert sum(n.op_type == "MatMulInteger" for n in quantized) == summary["products"] - 1


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
