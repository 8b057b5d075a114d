"""Scene views: both global views of a share of the batch are mosaics holding the row's picture in one tile.

Each view draws its own layout (``k x k`` tiles), the picture's tile and the other tiles (other pictures of the
batch, or empty), so the picture sits at another place and scale in each view. With ``anchor`` the first view stays
the whole picture (the cell term then teaches its pooled token to the picture's small copies). With ``neighbours`` the
second view places the row's raw-pixel neighbour instead (``data/neighbours.py``): its small copy is taught the
picture's pooled token, so scene rows carry the neighbour signal too. Since we placed it, we
know where its cells are: the spatial term then matches cells that share content but not position, which a position
embedding cannot satisfy (CP2's copy-paste correspondences, on hjepa's level grids). No label is read.

A placement ``(k, i, j)`` means the view's source canvas shows the picture in tile row ``i``, column ``j`` of a
``k x k`` grid; :func:`canvas_to_picture` turns a crop box of the canvas into a box in picture fractions, which is all
``losses/spatial.py`` needs. ``tiles`` says which row of the batch each tile shows (its own tile: the row itself, also
where it shows the row's neighbour; -1: empty), so with :func:`cell_tiles` the picture under every cell is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hjepa.config import ConfigError
from hjepa.data.mosaics import resize_uint8, tile_grid

EMPTY_TILE = 0.25  # share of filler tiles left black, as in the dense evaluation's mosaics


@dataclass
class Scenes:
    """``canvases`` uint8 ``[V, B, C, H, W]``, ``placement [V, B, 3]`` = (k, i, j), ``rows [B]`` bool;
    ``neighbours``: the second view places the row's neighbour, not the row's picture; ``tiles [V, B, T]`` long
    (T: the largest layout's tile count, row-major over the view's own ``k x k``): the batch row whose picture each
    tile shows, -1 where empty or beyond ``k x k``."""

    canvases: torch.Tensor
    placement: torch.Tensor
    rows: torch.Tensor
    neighbours: bool = False
    tiles: torch.Tensor | None = None


class SceneMaker:
    """Mosaics around a ``share`` of each batch's pictures; see the module docstring."""

    def __init__(self, share: float, layouts: Sequence[int] = (1, 2, 4), anchor: bool = False) -> None:
        if not 0 < share <= 1:
            raise ConfigError(f"data.scenes must be in (0, 1], got {share}")
        if not layouts or any(int(k) < 1 or int(k) > 8 for k in layouts):
            raise ConfigError(f"data.scene_layouts must be tile counts per side in 1..8, got {list(layouts)}")
        self.share = float(share)
        self.layouts = [int(k) for k in layouts]
        self.anchor = anchor  # view 0 keeps the whole picture (layout 1)

    def __call__(self, images: torch.Tensor, num_views: int, generator: torch.Generator,
                 neighbours: torch.Tensor | None = None) -> Scenes:
        """``images`` uint8 ``[B, C, H, W]``; ``neighbours`` (like ``images``): what the second view places instead
        of the row's picture. Every draw comes from ``generator`` (CPU), in a fixed order."""
        batch = images.shape[0]
        rows = torch.rand(batch, generator=generator) < self.share
        canvases, placements, tiles = [], [], []
        for view in range(num_views):
            pictures = neighbours if view == 1 and neighbours is not None else images
            canvas, placement, shown = self._view(pictures, images, rows & (view > 0 or not self.anchor), generator)
            canvases.append(canvas)
            placements.append(placement)
            tiles.append(shown)
        return Scenes(torch.stack(canvases), torch.stack(placements), rows.to(images.device), neighbours is not None,
                      torch.stack(tiles))

    def _view(self, pictures: torch.Tensor, images: torch.Tensor, rows: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One view's canvases: ``pictures`` placed on scene rows (``images`` elsewhere), tiles of ``images`` around
        them; with their placements and the batch row each tile shows (``Scenes.tiles``)."""
        batch, most = images.shape[0], max(self.layouts) ** 2
        layout = torch.tensor(self.layouts)[torch.randint(len(self.layouts), (batch,), generator=generator)]
        slot = (torch.rand(batch, generator=generator) * layout.square()).long()
        fillers = torch.randint(batch, (batch, most), generator=generator)
        empty = torch.rand(batch, most, generator=generator) < EMPTY_TILE
        layout = torch.where(rows, layout, 1)
        slot = torch.where(rows, slot, 0)
        canvas = torch.where(rows.to(images.device).view(-1, 1, 1, 1), pictures, images)
        for k in self.layouts:
            chosen = (layout == k).to(images.device)
            if k == 1 or not bool(chosen.any()):
                continue
            device = images.device
            mosaic = _mosaic(pictures, images, k, slot.clamp(max=k * k - 1).to(device), fillers[:, :k * k].to(device),
                             empty[:, :k * k].to(device))
            canvas[chosen] = mosaic[chosen]
        placement = torch.stack([layout, slot // layout, slot % layout], dim=1).float()
        return canvas, placement.to(images.device), _tile_rows(layout, slot, fillers, empty).to(images.device)


def _tile_rows(layout: torch.Tensor, slot: torch.Tensor, fillers: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: the batch row each tile of a view shows (``Scenes.tiles``), from the draws of ``_view``."""
    batch, most = fillers.shape
    tile = torch.arange(most)
    shown = torch.where(empty | (tile >= layout.square()[:, None]), -1, fillers)
    shown[torch.arange(batch), slot] = torch.arange(batch)
    return shown


def _mosaic(pictures: torch.Tensor, images: torch.Tensor, k: int, slot: torch.Tensor, fillers: torch.Tensor,
            empty: torch.Tensor) -> torch.Tensor:
    """``k x k`` mosaics ``[B, C, H, W]``: row b's picture in tile ``slot[b]``, the ``fillers`` of ``images``
    elsewhere."""
    batch, _, height, width = images.shape
    small = resize_uint8(images, (height // k, width // k))
    placed = small if pictures is images else resize_uint8(pictures, (height // k, width // k))
    tiles = small[fillers].masked_fill(empty.view(batch, k * k, 1, 1, 1), 0)  # [B, k*k, C, th, tw]
    tiles[torch.arange(batch, device=images.device), slot] = placed
    mosaic = tile_grid(tiles, k)
    if mosaic.shape[-2:] != (height, width):  # sides not divisible by k: stretch the few missing pixels
        mosaic = F.interpolate(mosaic.float(), size=(height, width), mode="nearest").to(torch.uint8)
    return mosaic


def canvas_to_picture(boxes: torch.Tensor, placement: torch.Tensor) -> torch.Tensor:
    """Crop boxes ``[B, 5]`` in canvas fractions -> the same boxes in fractions of the placed picture."""
    k, i, j = placement.unbind(-1)
    x0, y0, width, height, flip = boxes.unbind(-1)
    return torch.stack([k * x0 - j, k * y0 - i, k * width, k * height, flip], dim=-1)


def cell_centres(side: int, device: torch.device) -> torch.Tensor:
    """``[side, side, 2]``: (u, v) of each cell centre in [0, 1] view coordinates, row-major."""
    steps = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([u, v], dim=-1)


def picture_points(boxes: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """View points ``uv [B or 1, h, w, 2]`` of views cropped by ``boxes [B, 5]`` -> picture fractions ``(x, y)``
    ``[B, h, w]``; outside [0, 1] the point shows something else (another tile, a zoom-out canvas)."""
    x0, y0, width, height, flip = (part.view(-1, 1, 1) for part in boxes.unbind(-1))
    u = torch.where(flip > 0.5, 1 - uv[..., 0], uv[..., 0])
    return x0 + width * u, y0 + height * uv[..., 1]


def cell_tiles(boxes: torch.Tensor, placement: torch.Tensor, side: int) -> torch.Tensor:
    """``[B, side * side]`` long: the canvas tile (row-major in the view's ``k x k`` layout) under each cell centre of
    views cropped by ``boxes [B, 5]`` (picture fractions) from canvases laid out as ``placement [B, 3]``; -1 outside
    the canvas."""
    x, y = picture_points(boxes, cell_centres(side, boxes.device).unsqueeze(0))  # [B, side, side]
    k, i, j = (part.view(-1, 1, 1) for part in placement.unbind(-1))
    column, row = torch.floor(x + j), torch.floor(y + i)  # from picture to canvas fractions, times k
    inside = (column >= 0) & (column < k) & (row >= 0) & (row < k)
    return torch.where(inside, row * k + column, -1).long().flatten(1)


def picture_cells(boxes: torch.Tensor, side: int) -> torch.Tensor:
    """``[B, side, side]`` float: 1 where a cell centre of a view cropped by ``boxes [B, 5]`` shows the picture."""
    x, y = picture_points(boxes, cell_centres(side, boxes.device).unsqueeze(0))
    return ((x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)).float()
