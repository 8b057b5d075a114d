"""Mask generators: shapes, invariants (no overlap, index/mask agreement), coverage, alignment, termination, seeds."""

from __future__ import annotations

import pickle

import pytest
import torch

from hjepa.config import MaskConfig
from hjepa.masks import (
    MASK_GENERATORS,
    HierarchicalMaskGenerator,
    MaskBatch,
    MultiBlockMaskGenerator,
    build_mask_generator,
    level_scales,
)
from hjepa.masks.generator import subsample_context


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


GENERATORS = {
    "multiblock": lambda: MultiBlockMaskGenerator(14),
    "multiblock-3-levels": lambda: MultiBlockMaskGenerator(8, num_levels=3, min_keep=4),
    "hierarchical-3-levels": lambda: HierarchicalMaskGenerator(8, 3, num_targets=[4, 2, 1], min_keep=4),
    "hierarchical-non-square": lambda: HierarchicalMaskGenerator((6, 10), 2, num_targets=2, min_keep=3),
    "multiblock-non-square": lambda: MultiBlockMaskGenerator((5, 9), min_keep=2),
}


def check_invariants(masks: MaskBatch) -> None:
    """Everything the model relies on, asserted for one batch."""
    batch, n = masks.context.shape
    grid_h, grid_w = masks.grid
    assert n == grid_h * grid_w
    assert masks.context.dtype == torch.bool and masks.context_idx.dtype == torch.long
    num_keep = masks.context_idx.shape[1]
    assert num_keep >= 1
    assert torch.equal(masks.context.sum(dim=1), torch.full((batch,), num_keep))
    # context_idx lists exactly the True entries, ascending.
    assert torch.all(masks.context_idx[:, 1:] > masks.context_idx[:, :-1])
    assert torch.all(masks.context.gather(1, masks.context_idx))
    for k, (targets, idx, (h, w)) in enumerate(zip(masks.targets, masks.target_idx, masks.target_shapes, strict=True)):
        assert targets.dtype == torch.bool and idx.dtype == torch.long
        num_blocks = targets.shape[1]
        assert targets.shape == (batch, num_blocks, n) and idx.shape == (batch, num_blocks, h * w)
        assert h % 2**k == 0 and w % 2**k == 0
        # Each block mask is exactly its index set.
        assert torch.equal(targets.sum(dim=2), torch.full((batch, num_blocks), h * w))
        assert torch.all(targets.gather(2, idx))
        # Row-major within the block: one step right is +1, one step down is +grid_w.
        block = idx.view(batch, num_blocks, h, w)
        assert torch.all(block[..., 1:] - block[..., :-1] == 1)
        assert torch.all(block[..., 1:, :] - block[..., :-1, :] == grid_w)
        assert torch.all(block[..., 0, 0] // grid_w + h <= grid_h) and torch.all(
            block[..., 0, 0] % grid_w + w <= grid_w
        )
        # Never a context token inside a target block.
        assert not torch.any(masks.context.unsqueeze(1) & targets)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shapes_dtypes_and_invariants(name: str) -> None:
    generator = GENERATORS[name]()
    gen = seeded(0)
    for _ in range(10):
        masks = generator(16, gen)
        assert masks.batch_size == 16 and masks.num_levels == generator.num_levels
        assert all(t.device.type == "cpu" for t in [masks.context, *masks.targets])
        check_invariants(masks)


def test_multiblock_defaults_are_ijepa() -> None:
    generator = MultiBlockMaskGenerator(14)
    masks = generator(32, seeded(1))
    assert masks.num_levels == 1 and masks.targets[0].shape == (32, 4, 196)
    areas = []
    for seed in range(40):
        h, w = generator(1, seeded(seed)).target_shapes[0]
        areas.append(h * w / 196)
        assert 0.75 * 0.8 <= h / w <= 1.5 * 1.25  # aspect range, up to rounding of small sides
    assert 0.12 <= min(areas) and max(areas) <= 0.23 and max(areas) - min(areas) > 0.02


def test_multiblock_returns_the_same_blocks_at_every_level() -> None:
    masks = MultiBlockMaskGenerator(16, num_levels=3)(8, seeded(2))
    assert masks.num_levels == 3
    for k in (1, 2):
        assert torch.equal(masks.targets[k], masks.targets[0])
        assert torch.equal(masks.target_idx[k], masks.target_idx[0])
        assert masks.target_shapes[k] == masks.target_shapes[0]
    h, w = masks.target_shapes[0]
    assert h % 4 == 0 and w % 4 == 0
    corners = masks.target_idx[0][..., 0]
    assert torch.all(corners // 16 % 4 == 0) and torch.all(corners % 16 % 4 == 0)


@pytest.mark.parametrize("grid", [(8, 8), (16, 12)])
def test_hierarchical_blocks_align_to_level_cells(grid: tuple[int, int]) -> None:
    generator = HierarchicalMaskGenerator(grid, 3, num_targets=[3, 2, 1], min_keep=2)
    for seed in range(20):
        masks = generator(8, seeded(seed))
        assert [t.shape[1] for t in masks.targets] == [3, 2, 1]
        for k, (idx, (h, w)) in enumerate(zip(masks.target_idx, masks.target_shapes, strict=True)):
            cell = 2**k
            assert h % cell == 0 and w % cell == 0
            corners = idx[..., 0]
            assert torch.all(corners // grid[1] % cell == 0) and torch.all(corners % grid[1] % cell == 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiBlockMaskGenerator(8, min_keep=2),
        lambda: MultiBlockMaskGenerator(14),
        lambda: MultiBlockMaskGenerator((6, 9), min_keep=2),
        lambda: HierarchicalMaskGenerator(8, 2, num_targets=[2, 1], min_keep=2),
    ],
)
def test_every_cell_is_a_target_and_a_context_token_sometimes(make) -> None:
    generator = make()
    gen = seeded(3)
    n = generator.num_patches
    as_target = [torch.zeros(n, dtype=torch.bool) for _ in range(generator.num_levels)]
    as_context = torch.zeros(n, dtype=torch.bool)
    for _ in range(60):
        masks = generator(32, gen)
        as_context |= masks.context.any(dim=0)
        for k, targets in enumerate(masks.targets):
            as_target[k] |= targets.any(dim=1).any(dim=0)
    grid_h, grid_w = generator.grid
    # The last row and column are reachable (I-JEPA's randint(0, H - h) never places a block there).
    for k, hits in enumerate(as_target):
        assert hits.all(), f"level {k}: never a target: {(~hits).nonzero().squeeze(1).tolist()} of {grid_h}x{grid_w}"
    assert as_context.all(), f"never context: {(~as_context).nonzero().squeeze(1).tolist()}"


def test_seed_reproducibility() -> None:
    generator = HierarchicalMaskGenerator(8, 3, num_targets=[4, 2, 1], min_keep=4)
    a, b, c = generator(16, seeded(7)), generator(16, seeded(7)), generator(16, seeded(8))
    assert torch.equal(a.context, b.context) and torch.equal(a.context_idx, b.context_idx)
    assert all(torch.equal(x, y) for x, y in zip(a.target_idx, b.target_idx, strict=True))
    assert a.target_shapes == b.target_shapes
    assert not torch.equal(a.context, c.context) or not torch.equal(a.target_idx[0], c.target_idx[0])
    # A fresh generator object (as in another data-loader worker) gives the same masks for the same seed.
    other = HierarchicalMaskGenerator(8, 3, num_targets=[4, 2, 1], min_keep=4)
    assert torch.equal(other(16, seeded(7)).context_idx, a.context_idx)


@pytest.mark.parametrize("grid", [2, (3, 2), (2, 3)])
def test_tiny_grids_terminate(grid) -> None:
    generator = MultiBlockMaskGenerator(grid, min_keep=1, max_attempts=5)
    gen = seeded(4)
    for _ in range(20):
        check_invariants(generator(8, gen))


def test_huge_min_keep_falls_back_and_terminates() -> None:
    generator = MultiBlockMaskGenerator(8, num_targets=4, target_scale=(0.3, 0.4), min_keep=63, max_attempts=3)
    masks = generator(16, seeded(5))
    check_invariants(masks)
    assert generator.num_fallbacks == 16  # 63 of 64 tokens can never be context next to 4 targets
    # 4b stacks the blocks in the corner: every block of a sample is the top-left placement.
    assert torch.all(masks.target_idx[0][..., 0] == 0)
    assert masks.context[:, -1].all()  # the bottom-right token is always free


def test_fallback_4a_context_is_complement_of_targets() -> None:
    # Context blocks of at most 4 tokens can never hold min_keep=10; the complement of small targets can.
    generator = MultiBlockMaskGenerator(
        8, num_targets=1, target_scale=(0.05, 0.05), context_scale=(0.05, 0.06), min_keep=10, max_attempts=2
    )
    masks = generator(8, seeded(6))
    check_invariants(masks)
    assert generator.num_fallbacks == 8
    h, w = masks.target_shapes[0]
    assert masks.num_context == 64 - h * w  # every sample keeps the whole complement of its one target
    assert torch.equal(masks.context, ~masks.targets[0].any(dim=1))


def test_subsample_is_random_not_truncation() -> None:
    context = torch.zeros(2, 10, dtype=torch.bool)
    context[0, :4] = True
    context[1, :8] = True
    kept_first = kept_last = 0
    for seed in range(200):
        sub, idx = subsample_context(context.clone(), seeded(seed))
        assert idx.shape == (2, 4) and torch.equal(sub[0], context[0])  # the shortest row is kept whole
        assert torch.all(sub <= context) and torch.all(idx[:, 1:] > idx[:, :-1])
        kept_first += int(sub[1, 0])
        kept_last += int(sub[1, 7])
    # Each of row 1's 8 tokens is kept with probability 4/8; truncation would always keep 0 and drop 7.
    assert 70 < kept_first < 130 and 70 < kept_last < 130


def test_level_scales() -> None:
    geometric = sum(level_scales((0.1, 0.2), 3, "geometric", 2.0), ())
    assert geometric == pytest.approx((0.1, 0.2, 0.2, 0.4, 0.4, 0.8))
    linear = sum(level_scales((0.1, 0.2), 3, "linear", 2.0), ())
    assert linear == pytest.approx((0.1, 0.2, 0.2, 0.4, 0.3, 0.6))
    assert level_scales((0.3, 0.5), 3, "geometric", 3.0)[2] == (1.0, 1.0)  # clamped to the whole grid
    with pytest.raises(ValueError, match="scale_progression"):
        level_scales((0.1, 0.2), 2, "cubic", 1.5)
    with pytest.raises(ValueError, match="non-positive"):
        level_scales((0.1, 0.2), 3, "linear", 0.2)


def test_hierarchical_target_sizes_grow_with_level() -> None:
    generator = HierarchicalMaskGenerator(16, 3, num_targets=1, target_scale=(0.05, 0.06), scale_factor=3.0)
    areas = torch.tensor([[h * w for h, w in generator(1, seeded(s)).target_shapes] for s in range(10)]).float()
    assert torch.all(areas[:, 0] < areas[:, 1]) and torch.all(areas[:, 1] < areas[:, 2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid_size": 14, "min_keep": 196}, "min_keep"),
        ({"grid_size": (1, 8)}, "at least 2x2"),
        ({"grid_size": (14, 14), "num_levels": 3}, "not divisible by 4"),
        ({"grid_size": 2, "num_levels": 2}, "single 2x2 cell"),
        ({"grid_size": 8, "target_scale": (0.3, 0.2)}, "target_scale"),
        ({"grid_size": 8, "target_scale": (0.0, 0.2)}, "target_scale"),
        ({"grid_size": 8, "context_scale": (0.5, 1.2)}, "context_scale"),
        ({"grid_size": 8, "target_aspect": (-1.0, 2.0)}, "target_aspect"),
        ({"grid_size": 8, "num_targets": 0}, "num_targets"),
        ({"grid_size": 8, "max_attempts": -1}, "max_attempts"),
        ({"grid_size": 8, "num_levels": 0}, "num_levels"),
        ({"grid_size": "8"}, "grid_size"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiBlockMaskGenerator(**kwargs)


def test_bad_hierarchical_arguments_and_batch_size_raise() -> None:
    with pytest.raises(ValueError, match="scale_progression"):
        HierarchicalMaskGenerator(8, 2, scale_progression="exponential")
    with pytest.raises(ValueError, match="num_targets"):
        HierarchicalMaskGenerator(8, 2, num_targets=[])
    with pytest.raises(ValueError, match="batch_size"):
        HierarchicalMaskGenerator(8, 2)(0)


def test_registry_and_build_from_config() -> None:
    assert MASK_GENERATORS.names() == ["hierarchical", "multiblock"]
    hierarchical = build_mask_generator(MaskConfig(num_targets=[3, 1], min_keep=2), 8, 3)
    assert isinstance(hierarchical, HierarchicalMaskGenerator)
    assert [b.num_targets for b in hierarchical.levels] == [3, 1, 1] and hierarchical.min_keep == 2
    multiblock = build_mask_generator(MaskConfig(generator="multiblock", num_targets=[2]), (8, 12), 2)
    assert isinstance(multiblock, MultiBlockMaskGenerator) and multiblock.num_levels == 2
    check_invariants(multiblock(4, seeded(0)))
    with pytest.raises(KeyError, match="hierarchical, multiblock"):
        build_mask_generator(MaskConfig(generator="random"), 8, 1)


def test_mask_batch_moves_and_pickles() -> None:
    generator = HierarchicalMaskGenerator(8, 2, num_targets=2, min_keep=2)
    masks = generator(4, seeded(0))
    moved = masks.to("meta")
    assert moved.context.device.type == "meta" and moved.target_idx[1].device.type == "meta"
    assert moved.target_shapes == masks.target_shapes and moved.grid == masks.grid
    if torch.cuda.is_available():
        assert masks.pin_memory().context.is_pinned()
    # Generators and batches cross data-loader worker boundaries by pickling.
    clone = pickle.loads(pickle.dumps(generator))
    assert torch.equal(clone(4, seeded(0)).context_idx, masks.context_idx)
    assert torch.equal(pickle.loads(pickle.dumps(masks)).target_idx[1], masks.target_idx[1])
    with pytest.raises(ValueError, match="target_idx"):
        trimmed = [idx[..., :-1] for idx in masks.target_idx]
        MaskBatch(masks.context, masks.context_idx, masks.targets, trimmed, masks.target_shapes, masks.grid)
