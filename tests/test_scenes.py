"""Scene views (``data.scenes``): both global views of a row are mosaics holding its picture at another place."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from train_helpers import assert_resume_is_exact

from hjepa.config import ConfigError, load_config
from hjepa.data import MultiViewAugment, SceneMaker
from hjepa.data.mosaics import resize_uint8
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
    assert views.same_picture.all() and views.scene_rows.all()
    maps = torch.stack([F.adaptive_avg_pool2d(v[:, :1], 8).permute(0, 2, 3, 1) for v in views.globals_])
    matched, share = match_loss(maps, views.boxes, views.same_picture)
    shuffled, _ = match_loss(maps[:, torch.randperm(64, generator=generator)], views.boxes, views.same_picture)
    assert 0 < share < 0.8  # cells on other pictures are left out
    assert matched < 0.15 * shuffled
    moved = (views.boxes[0, :, :2] - views.boxes[1, :, :2]).abs().amax(1)
    assert (moved > 0.5).float().mean() > 0.3  # the picture sits elsewhere in most pairs


def test_a_scene_view_is_pooled_over_the_cells_that_show_the_picture(tiny_config):
    from hjepa.data.multiview import Views
    from hjepa.losses.factory import build_multiview_loss
    from hjepa.models.multiview import MultiViewJEPA

    cfg = tiny_config
    cfg.model.objective, cfg.loss.regularizer, cfg.loss.regularizer_weight = "multiview", "vicreg", [0.1]
    model = MultiViewJEPA(cfg, build_multiview_loss(cfg.loss, cfg.model.num_levels))
    tokens = [torch.randn(2, 16, 8), torch.randn(2, 4, 8)]  # level 0 (4x4) and level 1 (2x2), two views
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])
    quarter = torch.tensor([[0.0, 0.0, 2.0, 2.0, 0.0]])  # the picture in the top-left tile of a 2x2 mosaic
    views = Views(torch.zeros(1, 2, 3, 16, 16), boxes=torch.stack([whole, quarter]),
                  scene_rows=torch.tensor([True]))
    level0, level1 = model._pooled(tokens, views)
    assert torch.allclose(level0[0], tokens[0][0].mean(0), atol=1e-6)
    top_left = tokens[0][1].view(4, 4, 8)[:2, :2].reshape(4, 8).mean(0)
    assert torch.allclose(level0[1], top_left, atol=1e-6)
    assert torch.allclose(level1[1], tokens[1][1][0], atol=1e-6)


def test_the_cell_term_pulls_the_cells_that_show_the_picture_to_its_pooled_token(tiny_config):
    from hjepa.data.multiview import MultiViewAugment
    from hjepa.losses.factory import build_multiview_loss
    from hjepa.models.multiview import MultiViewJEPA

    cfg = tiny_config
    cfg.model.objective, cfg.loss.regularizer, cfg.loss.regularizer_weight = "multiview", "vicreg", [0.1]
    cfg.loss.cell_weight = [0.0, 1.0]
    cfg.model.projector_hidden, cfg.model.projector_dim = 32, 16
    model = MultiViewJEPA(cfg, build_multiview_loss(cfg.loss, cfg.model.num_levels))
    assert model.cell_levels == [1]
    images = _smooth(8, side=16)
    generator = torch.Generator().manual_seed(0)
    scenes = SceneMaker(1.0, [2])(images, 2, generator)
    views = MultiViewAugment(16, crop_scale=(0.8, 1.0))(images, generator, None, scenes)
    out = model(views)
    assert "cell_h1" in out and "cell_h0" not in out and out["cell_h1"] > 0
    # The term by hand: level-1 tokens on the picture against the picture's pooled level-1 token.
    tokens = model.level_tokens(views.globals_.flatten(0, 1))[1]  # [V*B, 4, D]
    pooled = model._pooled(model.level_tokens(views.globals_.flatten(0, 1)), views)[1].view(2, 8, -1).mean(0)
    from hjepa.data.scenes import picture_cells

    shown = picture_cells(views.boxes.flatten(0, 1), 2).view(2, 8, 4)
    distance = (tokens.view(2, 8, 4, -1) - pooled[None, :, None]).square().mean(-1)
    assert torch.allclose(out["cell_h1"], (distance * shown).sum() / shown.sum(), rtol=1e-4)
    assert 0 < shown.mean() < 1  # in 2x2 scenes only some level-1 cells show the picture


@pytest.mark.parametrize("overrides, message", [
    (["model.objective=masked", "data.scenes=0.5"], "objective=multiview"),
    (["model.objective=masked", "loss.cell_weight=[1.0]"], "cell_weight"),
    (["loss.cell_weight=[-1.0]"], "cell_weight"),
    (["data.scenes=1.5"], "data.scenes"),
    (["data.scenes=0.5", "data.scene_layouts=[0]"], "scene_layouts"),
    (["data.scene_anchor=true"], "scene_anchor"),
])
def test_bad_scene_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("fashion-mnist-coarse", overrides)  # a preset without scenes


def test_training_with_scenes_runs_and_resumes_exactly(tmp_path):
    def config(out):
        return load_config("digits-debug", [
            "model.objective=multiview", "loss.regularizer=vicreg", "loss.regularizer_weight=[0.05]",
            "loss.spatial_weight=[1.0]", "data.scenes=0.5", "data.scene_layouts=[1, 2]", "train.steps=4",
            "train.checkpoint_every=2", "train.knn_every=0", f"train.out_dir={out}", "train.progress=false",
        ])

    assert_resume_is_exact(tmp_path, config)


def test_an_anchored_scene_keeps_the_whole_picture_in_its_first_view():
    images = torch.randint(1, 256, (32, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    plain = SceneMaker(0.5, [2, 4])(images, 2, torch.Generator().manual_seed(1))
    anchored = SceneMaker(0.5, [2, 4], anchor=True)(images, 2, torch.Generator().manual_seed(1))
    assert torch.equal(anchored.rows, plain.rows) and bool(anchored.rows.any())
    assert torch.equal(anchored.canvases[0], images)  # view 0: every row shows its whole picture
    assert (anchored.placement[0] == torch.tensor([1.0, 0.0, 0.0])).all()
    assert torch.equal(anchored.canvases[1], plain.canvases[1])  # the other views draw as before


def test_the_anchored_cell_target_is_the_whole_pictures_pooled_token():
    from hjepa.data.multiview import Views
    from hjepa.models import build_model

    cfg = load_config("digits-debug", ["model.objective=multiview", "data.scenes=0.5", "data.scene_anchor=true",
                                    "loss.cell_weight=[1.0]"])
    model = build_model(cfg)
    pooled = torch.randn(2 * 3, 8)  # [V*B, D]: view 0's rows first
    tokens = torch.randn(2 * 3, 4, 8)
    views = Views(torch.zeros(2, 3, 1, 8, 8), None, None, None, torch.tensor([True, False, True]))
    _, _, target = model._cells(tokens, pooled, views)
    per_view = pooled.view(2, 3, 8)
    assert torch.allclose(target[0], per_view[0, 0]) and torch.allclose(target[2], per_view[0, 2])
    assert torch.allclose(target[1], per_view[:, 1].mean(0))  # plain rows: the mean of both views


def test_the_standardised_cell_term_divides_each_dimension_by_the_cells_variance():
    from hjepa.losses.multiview import cells_to_picture

    generator = torch.Generator().manual_seed(0)
    target = torch.randn(6, 5, generator=generator)
    cells = target[None, :, None] + 0.3 * torch.randn(2, 6, 4, 5, generator=generator)
    shown = (torch.rand(2, 6, 4, generator=generator) > 0.3).float()
    raw = cells_to_picture(cells, shown, target)
    standard = cells_to_picture(cells, shown, target, standardise=True)
    picked = cells[shown.bool()]  # [M, D]
    variance = (picked - picked.mean(0)).square().mean(0)  # [D]
    by_hand = ((cells - target[None, :, None]).square() / variance).mean(-1)
    assert torch.allclose(standard, (by_hand * shown).sum() / shown.sum(), rtol=1e-5)
    # A shared offset and a common scale of every token leave the standardised term as it is; the raw one scales.
    offset = torch.randn(5, generator=generator) * 10
    assert torch.allclose(cells_to_picture(3 * cells + offset, shown, 3 * target + offset, standardise=True),
                          standard, rtol=1e-4)
    assert torch.allclose(cells_to_picture(3 * cells + offset, shown, 3 * target + offset), 9 * raw, rtol=1e-4)


def test_neighbour_scenes_place_the_neighbour_in_the_second_view_and_leave_the_first_alone():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (32, 1, 28, 28), generator=generator, dtype=torch.uint8)
    neighbours = torch.randint(1, 256, (32, 1, 28, 28), generator=generator, dtype=torch.uint8)
    plain = SceneMaker(1.0, [1, 2], anchor=True)(images, 2, torch.Generator().manual_seed(1))
    scenes = SceneMaker(1.0, [1, 2], anchor=True)(images, 2, torch.Generator().manual_seed(1), neighbours)
    assert scenes.neighbours and not plain.neighbours
    assert torch.equal(scenes.canvases[0], images) and torch.equal(scenes.placement, plain.placement)
    for row in range(32):
        k, i, j = (int(v) for v in scenes.placement[1, row])
        tile = slice(i * 28 // k, (i + 1) * 28 // k), slice(j * 28 // k, (j + 1) * 28 // k)
        small = resize_uint8(neighbours[row:row + 1], (28 // k, 28 // k))[0]
        assert torch.equal(scenes.canvases[1, row][:, tile[0], tile[1]], small)  # the neighbour, in its tile
        if k == 2:  # the other tiles still come from the batch's own pictures (or are empty)
            assert not torch.equal(scenes.canvases[1, row], plain.canvases[1, row])
    # A neighbour scene row is two pictures: the spatial term must leave it out.
    views = MultiViewAugment(28, crop_scale=(1.0, 1.0), hflip=False)(images, torch.Generator().manual_seed(2),
                                                                     neighbours, scenes)
    assert not bool(views.same_picture.any())
    views = MultiViewAugment(28, crop_scale=(1.0, 1.0), hflip=False)(images, torch.Generator().manual_seed(2),
                                                                     neighbours, plain)
    assert bool(views.same_picture.all())


def test_neighbour_scenes_need_every_rows_neighbour():
    with pytest.raises(ConfigError, match="scene_neighbours"):
        load_config("fashion-mnist", ["data.neighbour_views=0.5", "data.scene_neighbours=true"])



def _constant_pictures(count: int, side: int = 32) -> torch.Tensor:
    """Row b is one grey level, 8 + 7 b: a tile's pixels say which row it shows (resizing keeps a constant)."""
    return (8 + 7 * torch.arange(count, dtype=torch.uint8)).view(-1, 1, 1, 1).expand(count, 1, side, side).clone()


def _row_of(values: torch.Tensor) -> torch.Tensor:
    """The row a constant picture's grey level names; -1 for black (an empty tile)."""
    return torch.where(values == 0, -1, (values.long() - 8) // 7)


def _cell_sources(boxes, placement, tiles, side):
    """The batch row whose picture is under each cell centre, -1 where none: ``cell_tiles`` read through ``tiles``."""
    from hjepa.data.scenes import cell_tiles

    index = cell_tiles(boxes, placement, side)
    return torch.where(index >= 0, tiles.gather(1, index.clamp_min(0)), -1)


def test_scene_tiles_name_the_row_each_tile_shows():
    images = _constant_pictures(30)
    scenes = SceneMaker(0.7, [1, 2, 4])(images, 2, torch.Generator().manual_seed(3))
    assert scenes.tiles.shape == (2, 30, 16)
    empty = filler = 0
    for view in range(2):
        for row in range(30):
            k, i, j = (int(v) for v in scenes.placement[view, row])
            tiles = scenes.tiles[view, row]
            assert int(tiles[i * k + j]) == row and (tiles[k * k:] == -1).all()
            for tile in range(k * k):
                ti, tj = divmod(tile, k)
                pixels = scenes.canvases[view, row, 0, ti * 32 // k:(ti + 1) * 32 // k, tj * 32 // k:(tj + 1) * 32 // k]
                assert (_row_of(pixels) == int(tiles[tile])).all()
                empty += int(tiles[tile]) == -1
                filler += int(tiles[tile]) not in (-1, row)
    assert empty > 20 and filler > 60  # both kinds of tile were drawn


@pytest.mark.parametrize("flip", [False, True])
def test_cell_tiles_name_the_tile_under_each_cell_centre(flip):
    from hjepa.data.scenes import canvas_to_picture

    images = _constant_pictures(24)
    scenes = SceneMaker(1.0, [2, 4])(images, 2, torch.Generator().manual_seed(4))
    box = torch.tensor([0.0, 0.0, 1.0, 1.0, float(flip)]).expand(24, 5)  # the whole canvas, as a view sees it
    for view in range(2):
        boxes = canvas_to_picture(box, scenes.placement[view])
        sources = _cell_sources(boxes, scenes.placement[view], scenes.tiles[view], 8).view(24, 8, 8)
        centres = scenes.canvases[view, :, 0, 2::4, 2::4]  # the canvas pixel under each 4 px cell's centre
        expected = _row_of(centres.flip(-1) if flip else centres)
        assert torch.equal(sources, expected)


def test_tile_views_pool_each_filler_tile_and_name_its_picture():
    from hjepa.data.scenes import cell_tiles
    from hjepa.models import build_model

    cfg = load_config("digits-debug", ["model.objective=multiview", "data.scenes=1.0", "data.scene_anchor=true",
                                       "loss.tile_weight=[1.0]"])
    model = build_model(cfg)
    assert model.tile_levels == [0, 1]
    model.projectors[0], model.predictors[0] = torch.nn.Identity(), torch.nn.Identity()
    images = _constant_pictures(12, side=16)
    generator = torch.Generator().manual_seed(6)
    scenes = SceneMaker(1.0, [2, 4], anchor=True)(images, 2, generator)
    views = MultiViewAugment(16, crop_scale=(0.7, 1.0))(images, generator, None, scenes)
    boxes, placement, tiles = views.boxes.flatten(0, 1), views.placement.flatten(0, 1), views.tiles.flatten(0, 1)
    sources = _cell_sources(boxes, placement, tiles, 4)  # [V*B, 16]: level 0 is 4x4 here
    tokens = torch.zeros(24, 16, 8)
    tokens[..., 0] = sources.float()  # each level-0 token says which row's picture it shows
    predicted, rows = model._tile_views(tokens, model._tile_map(views, 4), 0)
    assert torch.equal(predicted[:, 0], rows.float())  # a tile's pooled cells all show its picture
    own = torch.arange(12).repeat(2)[:, None]
    index = cell_tiles(boxes, placement, 4)
    expected = {(b, int(t)) for b in range(24) for t, s in zip(index[b], sources[b], strict=True)
                if s >= 0 and s != own[b, 0]}
    assert len(rows) == len(expected) > 10 and not (rows == -1).any()


def test_the_tile_term_trains_the_encoder(tmp_path):
    from hjepa.train import train

    cfg = load_config("digits-debug", [
        "model.objective=multiview", "loss.regularizer=vicreg", "loss.regularizer_weight=[0.05]", "data.scenes=1.0",
        "data.scene_layouts=[2, 4]", "data.scene_anchor=true", "loss.tile_weight=[1.0]", "train.steps=2",
        "train.log_every=1", "train.knn_every=0", f"train.out_dir={tmp_path}", "train.progress=false"])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [row["tile_h0"] for row in rows if "tile_h0" in row]
    assert logged and all(0 < value < float("inf") for value in logged)


def test_the_tile_term_needs_scenes():
    with pytest.raises(ConfigError, match="tile_weight"):
        load_config("fashion-mnist-coarse", ["loss.tile_weight=[1.0]"])
