"""mask_statistics and draw_masks: numbers that match the masks, pictures that show them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hjepa.masks import HierarchicalMaskGenerator, MultiBlockMaskGenerator, draw_masks, mask_statistics
from hjepa.masks.drawing import CONTEXT_COLOUR, LEVEL_COLOURS


@pytest.fixture
def masks():
    return HierarchicalMaskGenerator(8, 2, num_targets=[3, 1], min_keep=4)(6, torch.Generator().manual_seed(0))


def test_statistics_match_the_masks(masks) -> None:
    stats = mask_statistics(masks)
    json.dumps(stats)  # plain Python numbers, ready for a JSONL log
    assert stats["overlap"] == 0
    assert stats["context_tokens"] == masks.num_context
    assert stats["context_fraction"] == pytest.approx(masks.num_context / 64)
    assert stats["target_blocks"] == [3, 1]
    assert stats["target_shape"] == [list(s) for s in masks.target_shapes]
    h1, w1 = masks.target_shapes[1]
    assert stats["target_cells"][1] == h1 * w1 // 4
    union0 = masks.targets[0].any(dim=1)
    assert stats["target_coverage"][0] == pytest.approx(union0.float().mean().item())
    union = union0 | masks.targets[1].any(dim=1)
    assert stats["target_union_fraction"] == pytest.approx(union.float().mean().item())
    total = stats["context_fraction"] + stats["target_union_fraction"] + stats["uncovered_fraction"]
    assert total == pytest.approx(1.0)


def test_statistics_count_overlap(masks) -> None:
    masks.context[0] |= masks.targets[0][0, 0]  # corrupt one sample: its first block becomes context too
    h, w = masks.target_shapes[0]
    assert mask_statistics(masks)["overlap"] == h * w


def test_draw_masks_tints_context_and_targets(masks) -> None:
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    before = image.copy()
    drawn = draw_masks(image, masks, index=1)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert np.array_equal(image, before)  # the input is not modified
    context = masks.context[1].view(8, 8).numpy()
    targets = masks.targets[0][1].any(dim=0).view(8, 8).numpy() | masks.targets[1][1].any(dim=0).view(8, 8).numpy()
    # Patch centres (8 px patches): context is bluer than grey, neither-context-nor-target is darker.
    centres = drawn[4::8, 4::8].astype(int)
    assert np.all(centres[context][:, 2] > 128) and np.all(centres[context][:, 0] < 128)
    neither = ~context & ~targets
    if neither.any():
        assert np.all(centres[neither] < 128)
    # Target blocks are outlined in their level's colour somewhere in the picture.
    for colour in LEVEL_COLOURS[:2]:
        assert np.any(np.all(drawn == np.asarray(colour, np.uint8), axis=-1))
    assert not np.any(np.all(drawn == np.asarray(CONTEXT_COLOUR, np.uint8), axis=-1))  # tinted, not painted


def test_draw_one_level_and_any_image_size(masks) -> None:
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not a multiple of the grid
    only_coarse = draw_masks(image, masks, index=0, level=1)
    assert only_coarse.shape == (50, 70, 3)
    assert not np.any(np.all(only_coarse == np.asarray(LEVEL_COLOURS[0], np.uint8), axis=-1))
    assert np.any(np.all(only_coarse == np.asarray(LEVEL_COLOURS[1], np.uint8), axis=-1))
    assert not np.array_equal(only_coarse, draw_masks(image, masks, index=0))


def test_draw_multiblock_non_square() -> None:
    masks = MultiBlockMaskGenerator((6, 9), min_keep=2)(2, torch.Generator().manual_seed(1))
    drawn = draw_masks(np.zeros((48, 72, 3), np.uint8) + 200, masks, index=-1)
    assert drawn.shape == (48, 72, 3) and (drawn != 200).any()


def test_draw_masks_rejects_bad_input(masks) -> None:
    with pytest.raises(ValueError, match="uint8"):
        draw_masks(np.zeros((32, 32, 3), np.float32), masks)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        draw_masks(np.zeros((32, 32), np.uint8), masks)
    with pytest.raises(IndexError, match="out of range"):
        draw_masks(np.zeros((32, 32, 3), np.uint8), masks, index=6)
    with pytest.raises(ValueError, match="level"):
        draw_masks(np.zeros((32, 32, 3), np.uint8), masks, level=2)
    with pytest.raises(ValueError, match="smaller than"):
        draw_masks(np.zeros((4, 4, 3), np.uint8), masks)
