"""``hjepa-export --img-size`` on imported encoders: I-JEPA's sin-cos table is recomputed for the new grid, a
learned table is resampled bicubically (as timm / DINOv2); the ONNX export at the second size matches an
independent float64 reference forward given a position table computed here, not by hjepa."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hjepa.export import ExportOptions, export
from hjepa.export.verify import cpu_session, sample_inputs
from hjepa.importers import ImportOptions, import_encoder
from hjepa.importers.reference import ReferenceSpec, reference_levels, reference_tokens
from tests.test_importers import DEPTH, DIM, GRID, HEADS, PATCH, fused_vit, ijepa_checkpoint

NEW_SIZE = 48  # 12 x 12 patches instead of 8 x 8


def ijepa_table(dim: int, side: int) -> np.ndarray:
    """I-JEPA's get_2d_sincos_pos_embed, written out in numpy: meshgrid(w, h), column half first, sin then cos."""
    grid = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))  # w first
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))

    def one_d(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(grid[0]), one_d(grid[1])], axis=1)


def bicubic(table: torch.Tensor, side: int) -> torch.Tensor:
    old = math.isqrt(table.shape[1])
    grid = table.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, side * side, -1)


@pytest.mark.parametrize("table", ["sincos", "learned"])
def test_an_imported_encoder_exports_at_another_size(table, tmp_path):
    weights = fused_vit(1)
    if table == "sincos":
        weights["pos_embed"] = torch.from_numpy(ijepa_table(DIM, GRID)).float()[None]
    source = tmp_path / "IN1K-tiny.pth.tar"
    ijepa_checkpoint(source, target=weights)
    import_encoder(source, tmp_path / "a", ImportOptions(num_heads=HEADS, levels=2))
    manifest = export(tmp_path / "a", "all", tmp_path / "exp", ExportOptions(img_size=NEW_SIZE))
    assert manifest["levels"]["0"]["metadata"]["img_size"] == NEW_SIZE

    side = NEW_SIZE // PATCH
    raw = {k: v.clone() for k, v in weights.items()}
    if table == "sincos":
        raw["pos_embed"] = torch.from_numpy(ijepa_table(DIM, side))[None]
    else:
        raw["pos_embed"] = bicubic(weights["pos_embed"], side)
    images = sample_inputs(2, NEW_SIZE, "float_nchw", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=3)
    tokens = reference_tokens(raw, ReferenceSpec("fused", "", HEADS, 1e-6, DEPTH), torch.from_numpy(images))
    reference = reference_levels(tokens, (side, side), [0, 1], "identity")
    for level in (0, 1):
        got = cpu_session(tmp_path / "exp" / f"level{level}.onnx").run(None, {"images": images})
        np.testing.assert_allclose(got[0], reference[level][0].numpy(), atol=2e-4, rtol=0)
        np.testing.assert_allclose(got[1], reference[level][1].numpy(), atol=2e-4, rtol=0)
