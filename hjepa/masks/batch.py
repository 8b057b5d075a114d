"""``MaskBatch``: a batch's context and target masks as booleans (statistics, drawing) and indices (gathers)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hjepa.masks.queries import QueryLayout, query_layout


@dataclass
class MaskBatch:
    """Masks for ``B`` samples on a ``(grid_h, grid_w)`` grid, ``N = grid_h * grid_w``; no target is context.

    Attributes:
        context: bool ``[B, N]``, exactly ``K`` True entries per row (the same ``K`` for every sample).
        context_idx: long ``[B, K]``, ascending indices of the True entries of ``context``.
        targets: per level ``k``, bool ``[B, T_k, N]``, one fine-grid mask per target block.
        target_idx: per level ``k``, long ``[B, T_k, h_k * w_k]``, row-major within the block.
        target_shapes: per level ``k``, ``(h_k, w_k)`` in fine patches, multiples of ``2**k``.
        queries: :class:`QueryLayout` for the joint predictor (``with_queries``), or None.
    """

    context: torch.Tensor
    context_idx: torch.Tensor
    targets: list[torch.Tensor]
    target_idx: list[torch.Tensor]
    target_shapes: list[tuple[int, int]]
    grid: tuple[int, int]
    queries: QueryLayout | None = None

    def __post_init__(self) -> None:
        # shapes only: values would sync the device
        n = self.grid[0] * self.grid[1]
        if self.context.dim() != 2 or self.context.shape[1] != n:
            raise ValueError(f"context must be [B, {n}] for grid {self.grid}, got {list(self.context.shape)}")
        batch = self.context.shape[0]
        if self.context_idx.dim() != 2 or self.context_idx.shape[0] != batch:
            raise ValueError(f"context_idx must be [{batch}, K], got {list(self.context_idx.shape)}")
        if not (len(self.targets) == len(self.target_idx) == len(self.target_shapes)):
            raise ValueError(
                f"targets, target_idx and target_shapes must have one entry per level, got "
                f"{len(self.targets)}, {len(self.target_idx)} and {len(self.target_shapes)}"
            )
        for k, (mask, idx, (h, w)) in enumerate(zip(self.targets, self.target_idx, self.target_shapes, strict=True)):
            if mask.dim() != 3 or mask.shape[0] != batch or mask.shape[2] != n:
                raise ValueError(f"targets[{k}] must be [{batch}, T, {n}], got {list(mask.shape)}")
            if tuple(idx.shape) != (batch, mask.shape[1], h * w):
                raise ValueError(
                    f"target_idx[{k}] must be [{batch}, {mask.shape[1]}, {h * w}] for blocks of {h}x{w}, "
                    f"got {list(idx.shape)}"
                )

    @property
    def num_levels(self) -> int:
        return len(self.targets)

    @property
    def batch_size(self) -> int:
        return self.context.shape[0]

    @property
    def num_context(self) -> int:
        """``K``, context tokens per sample."""
        return self.context_idx.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskBatch:
        """A copy on ``device``."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return MaskBatch(
            context=move(self.context),
            context_idx=move(self.context_idx),
            targets=[move(t) for t in self.targets],
            target_idx=[move(t) for t in self.target_idx],
            target_shapes=list(self.target_shapes),
            grid=self.grid,
            queries=self.queries.to(device, non_blocking=non_blocking) if self.queries is not None else None,
        )

    def with_queries(self) -> MaskBatch:
        """With its :class:`QueryLayout`; call it on the CPU."""
        self.queries = query_layout(self.target_idx, self.num_context, self.grid[0] * self.grid[1])
        return self

    def pin_memory(self) -> MaskBatch:
        """``DataLoader(pin_memory=True)`` calls this on custom types."""
        return MaskBatch(
            context=self.context.pin_memory(),
            context_idx=self.context_idx.pin_memory(),
            targets=[t.pin_memory() for t in self.targets],
            target_idx=[t.pin_memory() for t in self.target_idx],
            target_shapes=list(self.target_shapes),
            grid=self.grid,
            queries=self.queries.pin_memory() if self.queries is not None else None,
        )
