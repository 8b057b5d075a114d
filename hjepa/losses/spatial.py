"""Per-level spatial matching across views (VICRegL's location term, on hjepa's level grids).

Two global crops of one picture overlap; a level-k cell of view a sees a region that view b also sees, at a place
known from the crop boxes. For each cell centre of view a, its position in view b is computed from the boxes, view
b's level-k map is sampled there (bilinear), and the two embeddings are pulled together::

    L_match,k = mean over valid (a, b, cell) of |z_a(cell) - z_b(warp_ab(cell))|^2
    L_local,k = (1 - lambda_k) L_match,k + lambda_k R(z cells of every view)

A cell is valid when its centre shows the picture (a scene view, ``data/scenes.py``, shows others around it), falls
inside view b, and both views come from the same picture (a neighbour view does not). Shapes: ``maps[V, B, h, w, K]``,
``boxes[V, B, 5]`` = (x0, y0, width, height, flip), fractions of the source picture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hjepa.data.scenes import cell_centres, picture_points


def warp_cells(box_a: Tensor, box_b: Tensor, side: int) -> tuple[Tensor, Tensor]:
    """Where view a's cell centres fall in view b: ``(uv [B, side, side, 2] in [0, 1], inside [B, side, side])``."""
    x, y = picture_points(box_a, cell_centres(side, box_a.device).unsqueeze(0))
    on_picture = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)  # scene views also show other pictures
    x0, y0, width, height, flip = (part.view(-1, 1, 1) for part in box_b.unbind(-1))
    u_b, v_b = (x - x0) / width, (y - y0) / height
    u_b = torch.where(flip > 0.5, 1 - u_b, u_b)
    inside = on_picture & (u_b >= 0) & (u_b <= 1) & (v_b >= 0) & (v_b <= 1)
    return torch.stack([u_b, v_b], dim=-1), inside


def sample_map(feature_map: Tensor, uv: Tensor) -> Tensor:
    """``feature_map [B, h, w, K]`` sampled at ``uv [B, h', w', 2]`` (bilinear, ``align_corners=False``, edges
    clamped) -> ``[B, h', w', K]``."""
    grid = uv * 2 - 1
    sampled = F.grid_sample(feature_map.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled.permute(0, 2, 3, 1)


def match_loss(maps: Tensor, boxes: Tensor, same_picture: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean squared distance of matched cells over every ordered pair of views, and the share of cells matched.

    ``maps [V, B, h, w, K]``, ``boxes [V, B, 5]``, ``same_picture [B]`` (False rows are left out) or None.
    """
    num_views, batch, side = maps.shape[0], maps.shape[1], maps.shape[2]
    total = maps.new_zeros(())
    count = maps.new_zeros(())
    cells = 0
    for a in range(num_views):
        for b in range(num_views):
            if a == b:
                continue
            uv, inside = warp_cells(boxes[a], boxes[b], side)
            if same_picture is not None:
                inside = inside & same_picture.view(batch, 1, 1)
            target = sample_map(maps[b], uv)
            distance = (maps[a] - target).square().mean(-1)  # [B, h, w]
            weight = inside.to(distance.dtype)
            total = total + (distance * weight).sum()
            count = count + weight.sum()
            cells += inside.numel()
    return total / count.clamp_min(1), count / max(cells, 1)
