"""Spatial (per-level cell matching) terms of the multi-view objective: geometry, loss, model wiring."""

import torch
import torch.nn.functional as F

from hjepa.data.transforms import PretrainAugment
from hjepa.losses.spatial import cell_centres, match_loss, sample_map, warp_cells


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_identical_boxes_map_cells_onto_themselves():
    box = boxes([0.1, 0.2, 0.5, 0.6, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0])
    uv, inside = warp_cells(box, box, 4)
    assert inside.all()
    assert torch.allclose(uv, cell_centres(4, torch.device("cpu")).expand(2, 4, 4, 2), atol=1e-6)


def test_a_flip_mirrors_columns_and_a_shift_leaves_cells_outside():
    whole = boxes([0.0, 0.0, 1.0, 1.0, 0.0])
    flipped = boxes([0.0, 0.0, 1.0, 1.0, 1.0])
    uv, inside = warp_cells(whole, flipped, 4)
    assert inside.all() and torch.allclose(uv[0, :, :, 0], 1 - cell_centres(4, torch.device("cpu"))[:, :, 0])
    right_half = boxes([0.5, 0.0, 0.5, 1.0, 0.0])
    _, inside = warp_cells(whole, right_half, 4)
    assert inside[0, :, :2].logical_not().all() and inside[0, :, 2:].all()


def test_sampling_a_map_at_its_cell_centres_returns_it():
    feature_map = torch.randn(2, 4, 4, 3)
    uv = cell_centres(4, torch.device("cpu")).expand(2, 4, 4, 2)
    assert torch.allclose(sample_map(feature_map, uv), feature_map, atol=1e-5)


def test_cells_matched_through_real_crops_see_the_same_content():
    """Two crops of a smooth picture, each pooled to a 4x4 grid: warped cells agree far better than shuffled ones."""
    generator = torch.Generator().manual_seed(0)
    base = F.interpolate(torch.rand(8, 1, 4, 4, generator=generator), size=(64, 64), mode="bicubic",
                         align_corners=False)
    images = (base.clamp(0, 1) * 255).to(torch.uint8)
    augment = PretrainAugment(32, crop_scale=(0.4, 0.8), mean=(0, 0, 0), std=(1, 1, 1))
    views = [augment.crops_and_boxes(images, generator) for _ in range(2)]
    maps = torch.stack([F.avg_pool2d(crops[:, :1], 8).permute(0, 2, 3, 1) for crops, _ in views])  # [2, B, 4, 4, 1]
    crop_boxes = torch.stack([box for _, box in views])
    matched, share = match_loss(maps, crop_boxes, None)
    shuffled, _ = match_loss(maps[:, torch.randperm(8, generator=generator)], crop_boxes, None)
    assert 0 < share <= 1
    assert matched < 0.1 * shuffled
    only_first = torch.tensor([True] + [False] * 7)
    _, share_first = match_loss(maps, crop_boxes, only_first)
    assert share_first <= share / 4


def test_multiview_model_with_spatial_terms_trains_and_logs_them(tiny_config):
    from hjepa.data.multiview import MultiViewAugment
    from hjepa.losses.factory import build_multiview_loss
    from hjepa.models.multiview import MultiViewJEPA

    cfg = tiny_config
    cfg.model.objective, cfg.loss.regularizer = "multiview", "vicreg"
    cfg.loss.regularizer_weight, cfg.loss.spatial_weight = [0.1], [1.0, 0.5]
    cfg.model.projector_hidden, cfg.model.projector_dim = 32, 16
    model = MultiViewJEPA(cfg, build_multiview_loss(cfg.loss, cfg.model.num_levels))
    assert set(model.local_projectors) == {"0", "1"}
    images = torch.randint(0, 255, (6, 1, 16, 16), dtype=torch.uint8)
    second = images.clone()
    second[0] = 255 - second[0]  # a neighbour view for row 0
    views = MultiViewAugment(16, crop_scale=(0.5, 1.0))(images, torch.Generator().manual_seed(0), second)
    assert views.boxes.shape == (2, 6, 5) and views.same_picture.tolist() == [False] + [True] * 5
    out = model(views)
    assert {"match_h0", "match_h1", "match_share_h0", "local_reg_h1"} <= set(out)
    out["loss"].backward()
    assert model.local_projectors["0"][0].weight.grad.abs().sum() > 0
    grads = [p.grad for p in model.context_encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_spatial_weight_with_a_pairwise_regulariser_is_a_config_error(tiny_config):
    import pytest

    from hjepa.config import ConfigError
    from hjepa.losses.factory import build_multiview_loss

    tiny_config.loss.regularizer, tiny_config.loss.spatial_weight = "barlow", [1.0]
    tiny_config.loss.regularizer_weight = [0.1]
    with pytest.raises(ConfigError, match="spatial_weight"):
        build_multiview_loss(tiny_config.loss, 2)


def test_zoom_out_boxes_hold_the_whole_picture_and_plain_crops_keep_their_stream():
    images = torch.randint(1, 255, (64, 1, 28, 28), dtype=torch.uint8)
    zoomed = PretrainAugment(32, crop_scale=(0.85, 1.0), zoom_out=0.5, zoom_out_scale=(1.5, 2.0))
    crops, box = zoomed.crops_and_boxes(images, torch.Generator().manual_seed(0))
    out = box[:, 2] > 1
    assert 10 < out.sum() < 54  # about half
    assert (box[out, 0] <= 0).all() and (box[out, 0] + box[out, 2] >= 1 - 1e-5).all()
    assert (box[out, 2] >= 1.5 - 1e-5).all() and (box[out, 2] <= 2.0 + 1e-5).all()
    # The canvas outside the picture is black (0 before normalisation).
    away = out & (box[:, 0] < -0.1) & (box[:, 1] < -0.1)
    corner = crops[away][:, 0, 0, 0] * zoomed.std[0, 0, 0, 0] + zoomed.mean[0, 0, 0, 0]
    assert away.any() and corner.abs().max() < 1e-5
    # The zoom draws come after the crop draws: the other rows are the crops of the same seed without zoom-out.
    plain = PretrainAugment(32, crop_scale=(0.85, 1.0)).crop_boxes(64, 28, 28, torch.Generator().manual_seed(0))
    again = zoomed.crop_boxes(64, 28, 28, torch.Generator().manual_seed(0))
    assert torch.equal(again[~out], plain[~out])
