"""``QueryLayout``: each sample's distinct target queries, packed for the joint predictor (docs/internals.md).

A query repeated ``c`` times by overlapping blocks is computed once with a ``log c`` attention bias: exact.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class QueryLayout:
    """``B`` sequences of ``K`` context tokens and ``U_b <= U`` distinct queries, packed to ``T`` real tokens.

    Attributes:
        positions: long ``[B, U]``, fine-grid position of each distinct query (0 where padded).
        levels: long ``[B, U]``, hierarchy level of each distinct query (0 where padded).
        bias: float ``[B, K + U]``: 0 for context, ``log(count)`` for queries, ``-inf`` for padding.
        rows: long ``[T]``, real tokens' indices into the padded ``[B * (K + U)]``.
        query_rows: long ``[T_q]``, query tokens' indices into the packed ``[T]``.
        query_slots: long ``[T_q]``, the same queries' indices into the padded ``[B * U]``.
        inverse: long ``[B, Q]``, each original query's index into the packed ``[T_q]``.
    """

    positions: torch.Tensor
    levels: torch.Tensor
    bias: torch.Tensor
    rows: torch.Tensor
    query_rows: torch.Tensor
    query_slots: torch.Tensor
    inverse: torch.Tensor

    @property
    def num_queries(self) -> int:
        """``U``: the longest sample's number of distinct queries."""
        return self.positions.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QueryLayout:
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)}
        return QueryLayout(**moved)

    def pin_memory(self) -> QueryLayout:
        return QueryLayout(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


def query_layout(target_idx: list[torch.Tensor], num_context: int, num_patches: int) -> QueryLayout:
    """The layout for per-level blocks ``target_idx[k] [B, T_k, M_k]`` behind ``num_context`` context tokens."""
    # Step 1. One key per query, level-major: equal keys are identical queries
    keys = torch.cat([idx.flatten(1) + k * num_patches for k, idx in enumerate(target_idx)], dim=1)  # [B, Q]
    batch, device = keys.shape[0], keys.device
    sorted_keys, order = keys.sort(dim=1)
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    slot = first.cumsum(dim=1) - 1  # [B, Q]: the distinct-query slot of each sorted query
    distinct = slot[:, -1] + 1  # [B]
    width = int(distinct.max())  # note: a host sync on a GPU; build in the data pipeline
    # Step 2. Distinct queries, their multiplicity, and the slot of every original query
    unique = torch.zeros(batch, width, dtype=keys.dtype, device=device).scatter_(1, slot, sorted_keys)
    counts = torch.zeros(batch, width, device=device).scatter_add_(1, slot, torch.ones(slot.shape, device=device))
    original_slot = torch.empty_like(slot).scatter_(1, order, slot)  # [B, Q]
    valid_query = torch.arange(width, device=device)[None] < distinct[:, None]  # [B, U]
    # Step 3. Packing: real tokens of the padded [B, K + U] batch, row-major
    valid = torch.cat([torch.ones(batch, num_context, dtype=torch.bool, device=device), valid_query], dim=1)
    packed_index = (valid.flatten().cumsum(0) - 1).view(batch, -1)
    query_index = (valid_query.flatten().cumsum(0) - 1).view(batch, width)
    query_bias = counts.log().masked_fill(~valid_query, float("-inf"))
    bias = torch.cat([torch.zeros(batch, num_context, device=device), query_bias], dim=1)
    return QueryLayout(
        positions=torch.where(valid_query, unique % num_patches, 0),
        levels=torch.where(valid_query, unique // num_patches, 0),
        bias=bias,
        rows=valid.flatten().nonzero().squeeze(1),
        query_rows=packed_index[:, num_context:][valid_query],
        query_slots=valid_query.flatten().nonzero().squeeze(1),
        inverse=query_index.gather(1, original_slot),
    )
