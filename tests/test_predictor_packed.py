"""The packed joint predictor: distinct queries once, no padding in the per-token layers, same results as joint."""

import math

import pytest
import torch
from timm.layers import DropPath

from hjepa.masks import query_layout
from hjepa.train.model import build_training_model
from tests.test_models import make_masks, small_config


def test_query_layout_on_hand_made_blocks():
    # Sample 0: blocks {1, 2} and {2, 3} -> distinct 1, 2 (twice), 3. Sample 1: {5, 6} twice -> 5 (x2), 6 (x2).
    level0 = torch.tensor([[[1, 2], [2, 3]], [[5, 6], [5, 6]]])
    level1 = torch.tensor([[[2, 3]], [[0, 1]]])  # level 1 is another query even at the same position
    layout = query_layout([level0, level1], num_context=2, num_patches=16)
    assert layout.num_queries == 5  # sample 0: 1, 2, 3 at level 0 and 2, 3 at level 1
    torch.testing.assert_close(layout.positions, torch.tensor([[1, 2, 3, 2, 3], [5, 6, 0, 1, 0]]))
    torch.testing.assert_close(layout.levels, torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]]))
    log2 = math.log(2.0)
    inf = float("-inf")
    torch.testing.assert_close(
        layout.bias, torch.tensor([[0, 0, 0, log2, 0, 0, 0], [0, 0, log2, log2, 0, 0, inf]])
    )
    # Real tokens: 7 of sample 0, then 6 of sample 1 (its last slot is padding).
    torch.testing.assert_close(layout.rows, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]))
    torch.testing.assert_close(layout.query_rows, torch.tensor([2, 3, 4, 5, 6, 9, 10, 11, 12]))
    # Every original query finds a packed query with its own level and position.
    flat = torch.cat([level0.flatten(1), level1.flatten(1)], dim=1)
    levels = torch.tensor([0, 0, 0, 0, 1, 1])
    for b in range(2):
        valid = torch.isfinite(layout.bias[b, 2:])
        pos, lev = layout.positions[b][valid], layout.levels[b][valid]
        offset = 0 if b == 0 else int(torch.isfinite(layout.bias[0, 2:]).sum())
        for q in range(flat.shape[1]):
            slot = int(layout.inverse[b, q]) - offset
            assert (int(pos[slot]), int(lev[slot])) == (int(flat[b, q]), int(levels[q]))


@pytest.mark.parametrize("num_levels", [1, 3])
def test_packed_prediction_equals_joint_loss_and_gradients(num_levels):
    torch.manual_seed(0)
    cfg = small_config(num_levels=num_levels, predictor_depth=2)
    cfg.masks.num_targets = [4] if num_levels == 1 else [3, 2, 1]
    model = build_training_model(cfg)
    masks = make_masks(cfg, model, batch=4, seed=3).with_queries()  # as the training loop does, on the CPU
    flat = torch.cat([idx.flatten(1) for idx in masks.target_idx], dim=1)
    assert masks.queries.inverse.shape == flat.shape
    images = torch.randn(4, 3, 32, 32)
    results = {}
    for mode in ("joint", "packed"):
        model.predictor_batching = mode
        model.zero_grad()
        loss = model(images, masks)["loss"]
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results[mode] = (loss.detach(), grads)
    torch.testing.assert_close(results["packed"][0], results["joint"][0], rtol=1e-5, atol=1e-6)
    assert len(results["packed"][1]) == len(results["joint"][1])
    for packed, joint in zip(results["packed"][1], results["joint"][1], strict=True):
        torch.testing.assert_close(packed, joint, rtol=1e-4, atol=1e-6)


def test_packed_predictor_with_duplicates_matches_padded_sequences_directly():
    # Queries repeated on purpose: every one of the three copies must get the padded forward's answer.
    torch.manual_seed(0)
    cfg = small_config(num_levels=1, predictor_depth=3)
    model = build_training_model(cfg).eval()
    predictor = model.predictor
    context = torch.randn(2, 5, 32)
    context_idx = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])
    target_idx = torch.tensor([[20, 21, 20, 22, 20], [30, 31, 32, 33, 34]])
    expected = predictor(context, context_idx, target_idx, torch.zeros(5, dtype=torch.long))
    layout = query_layout([target_idx[:, None]], num_context=5, num_patches=64)
    got = predictor.forward_packed(context, context_idx, layout)
    assert layout.num_queries == 5 and int(torch.isfinite(layout.bias[0]).sum()) == 5 + 3
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0, 0], got[0, 2])


def test_packed_masks_with_fewer_levels_than_the_model_and_stochastic_depth():
    # A two-level model fed single-level masks repeats the blocks: the layout is then made on the fly.
    torch.manual_seed(0)
    cfg = small_config(num_levels=2, predictor_depth=2, predictor_drop_path=0.5)
    model = build_training_model(cfg)
    one_level = small_config(num_levels=1)
    masks = make_masks(one_level, build_training_model(one_level), batch=3)
    images = torch.randn(3, 3, 32, 32)
    model.train()
    loss = model(images, masks)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.predictor.mask_tokens.grad is not None
    model.eval()  # no stochastic depth: packed and joint agree again
    packed = model(images, masks)["loss"]
    model.predictor_batching = "joint"
    torch.testing.assert_close(packed, model(images, masks)["loss"], rtol=1e-5, atol=1e-6)


def test_mask_batch_moves_its_layout():
    cfg = small_config(num_levels=1)
    masks = make_masks(cfg, build_training_model(cfg), batch=2)
    assert masks.queries is None and masks.to("cpu").queries is None
    masks = masks.with_queries()
    moved = masks.to("cpu")
    assert moved.queries is not None
    torch.testing.assert_close(moved.queries.inverse, masks.queries.inverse)


def test_cross_predictor_same_predictions_in_every_layout_and_stochastic_depth_per_sample():
    # Queries never attend to each other, so joint, packed and per-block batching are the same computation.
    torch.manual_seed(0)
    cfg = small_config(num_levels=2, predictor="cross", predictor_depth=2)
    cfg.masks.num_targets = [3, 2]
    model = build_training_model(cfg)
    masks = make_masks(cfg, model, batch=4, seed=5)
    images = torch.randn(4, 3, 32, 32)
    losses = {}
    for mode in ("joint", "packed", "per_block"):
        model.predictor_batching = mode
        losses[mode] = model(images, masks)["loss"]
    torch.testing.assert_close(losses["packed"], losses["joint"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["per_block"], losses["joint"], rtol=1e-5, atol=1e-6)
    # Context tokens are read, never updated: a query's prediction does not depend on the other queries.
    predictor = model.predictor.eval()
    context, context_idx = torch.randn(1, 4, 32), torch.tensor([[0, 1, 2, 3]])
    level = torch.zeros(3, dtype=torch.long)
    both = predictor(context, context_idx, torch.tensor([[10, 20, 30]]), level)
    alone = predictor(context, context_idx, torch.tensor([[10]]), level[:1])
    torch.testing.assert_close(both[:, :1], alone, rtol=1e-5, atol=1e-6)
    # Stochastic depth drops whole samples: at p=1 every residual branch is dropped and queries pass unchanged.
    cfg = small_config(num_levels=1, predictor="cross", predictor_depth=2, predictor_drop_path=1.0)
    dropped = build_training_model(cfg).predictor.train()
    for block in dropped.blocks:  # the rates ramp from 0: make every block drop
        block.drop_path = DropPath(1.0)
    layout = query_layout([torch.tensor([[[5, 6]], [[7, 8]]])], num_context=4, num_patches=64)
    out = dropped.forward_packed(torch.randn(2, 4, 32), torch.tensor([[0, 1, 2, 3]] * 2), layout)
    queries = dropped.mask_tokens[0] + dropped.pos_embed[0, torch.tensor([[5, 6], [7, 8]])]
    torch.testing.assert_close(out, dropped.proj(dropped.norm(queries)))


@pytest.mark.parametrize("predictor", ["transformer", "cross"])
def test_packed_under_bf16_autocast_matches_joint(predictor):
    # Training on a GPU runs under bf16 autocast: the padded scatter, the -inf bias and the gathers must keep dtypes.
    torch.manual_seed(0)
    cfg = small_config(num_levels=2, predictor_depth=2, predictor=predictor)
    cfg.masks.num_targets = [3, 2]
    model = build_training_model(cfg)
    masks = make_masks(cfg, model, batch=4, seed=1).with_queries()
    images = torch.randn(4, 3, 32, 32)
    losses = {}
    for mode in ("joint", "packed"):
        model.predictor_batching = mode
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses[mode] = model(images, masks)["loss"]
        losses[mode].backward()
    assert model.predictor.mask_tokens.grad is not None and torch.isfinite(model.predictor.mask_tokens.grad).all()
    torch.testing.assert_close(losses["packed"], losses["joint"], rtol=1e-2, atol=1e-3)


def test_only_a_packing_model_asks_for_the_layout():
    # The training loop builds the layout only when the model will use it (2 ms per batch of 256 at 224/16).
    assert build_training_model(small_config(num_levels=1)).packs_queries
    assert not build_training_model(small_config(num_levels=1, predictor_batching="joint")).packs_queries
    assert not build_training_model(small_config(num_levels=1, predictor="hamiltonian")).packs_queries
