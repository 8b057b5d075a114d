"""Scene views (``data.scenes``): both global views of a row are mosaics holding its picture at another place."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hjepa.config import ConfigError, load_config
from hjepa.data import MultiViewAugment, SceneMaker
from hjepa.losses.multiview import MultiViewLoss
from hjepa.losses.spatial import match_loss


def _smooth(count: int, side: int = 28, seed: int = 0) -> torch.Tensor:
    low = torch.rand(count, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False) * 255).to(torch.uint8)


def test_the_picture_sits_in_its_tile_and_other_rows_are_untouched():
    images = torch.randint(1, 256, (32, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    scenes = SceneMaker(0.5, [2, 4])(images, 2, torch.Generator().manual_seed(1))
    assert 4 < int(scenes.rows.sum()) < 28
    for view in range(2):
        for row in range(32):
            k, i, j = (int(v) for v in scenes.placement[view, row])
            canvas = scenes.canvases[view, row]
            if not scenes.rows[row]:
                assert (k, i, j) == (1, 0, 0) and torch.equal(canvas, images[row])
                continue
            assert k in (2, 4) and 0 <= i < k and 0 <= j < k
            tile = 28 // k
            small = F.interpolate(images[row:row + 1].float(), size=(tile, tile), mode="bilinear",
                                  align_corners=False, antialias=True).round().clamp(0, 255).to(torch.uint8)[0]
            assert torch.equal(canvas[:, i * tile:(i + 1) * tile, j * tile:(j + 1) * tile], small)
    again = SceneMaker(0.5, [2, 4])(images, 2, torch.Generator().manual_seed(1))
    assert torch.equal(again.canvases, scenes.canvases)  # a pure function of the generator


def test_scene_cells_are_matched_to_the_same_content_at_another_place():
    images = _smooth(64)
    generator = torch.Generator().manual_seed(2)
    scenes = SceneMaker(1.0, [1, 2, 4])(images, 2, generator)
    views = MultiViewAugment(32, crop_scale=(0.5, 1.0), normalisation=((0, 0, 0), (1, 1, 1)))(
        images, generator, None, scenes)
    assert views.same_picture.all() and not views.pooled_rows.any()
    maps = torch.stack([F.adaptive_avg_pool2d(v[:, :1], 8).permute(0, 2, 3, 1) for v in views.globals_])
    matched, share = match_loss(maps, views.boxes, views.same_picture)
    shuffled, _ = match_loss(maps[:, torch.randperm(64, generator=generator)], views.boxes, views.same_picture)
    assert 0 < share < 0.8  # cells on other pictures are left out
    assert matched < 0.15 * shuffled
    moved = (views.boxes[0, :, :2] - views.boxes[1, :, :2]).abs().amax(1)
    assert (moved > 0.5).float().mean() > 0.3  # the picture sits elsewhere in most pairs


def test_scene_rows_are_left_out_of_the_pooled_term():
    class NoRegulariser(torch.nn.Module):
        def forward(self, view, center=None, step=0):
            return {"loss": view.new_zeros(())}

    loss = MultiViewLoss(NoRegulariser(), [0.5], [1.0])
    z = torch.randn(2, 6, 4)
    rows = torch.tensor([True, True, False, True, False, True])
    base = loss([z], [z], 2, pooled_rows=rows)["pred_h0"]
    changed = z.clone()
    changed[:, ~rows] += torch.randn(2, 2, 4) * 10
    assert torch.allclose(loss([changed], [changed], 2, pooled_rows=rows)["pred_h0"], base)
    assert not torch.allclose(loss([changed], [changed], 2)["pred_h0"], base)


@pytest.mark.parametrize("overrides, message", [
    (["model.objective=masked", "data.scenes=0.5"], "objective=multiview"),
    (["data.scenes=0.5", "loss.spatial_weight=[0.0]"], "spatial_weight"),
    (["data.scenes=1.5"], "data.scenes"),
    (["data.scenes=0.5", "data.scene_layouts=[0]"], "scene_layouts"),
])
def test_bad_scene_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("fashion-mnist", overrides)


def test_training_with_scenes_runs_and_resumes_exactly(tmp_path):
    from hjepa.train import train
    from hjepa.train.checkpoint import load_checkpoint

    def config(out, share=0.5):
        return load_config("digits-debug", [
            "model.objective=multiview", "loss.regularizer=vicreg", "loss.regularizer_weight=[0.05]",
            "loss.spatial_weight=[1.0]", f"data.scenes={share}", "data.scene_layouts=[1, 2]", "train.steps=4",
            "train.checkpoint_every=2", "train.knn_every=0", f"train.out_dir={out}", "train.progress=false",
        ])

    train(config(tmp_path / "a"))
    train(config(tmp_path / "b"), stop_at=2)
    train(config(tmp_path / "b"), resume=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
