"""Multi-view prediction loss (LeJEPA, Balestriero & LeCun, 2025) per hierarchy level.

For level h, with z_v ``[B, K]`` the projected embedding of view v (V views, the first V_g global), c the mean of the
global views' embeddings, p_v = P(z_v) the predictor's output (P = identity without a predictor), lambda_h the
regulariser weight and w_h the level weight::

    c        = 1/V_g sum_{v < V_g} z_v                                  (gradient flows into c, as in LeJEPA)
    L_pred,h = 1/V sum_v mean_{b, k} (p_v - c)^2
    L_reg,h  = 1/V sum_v R(z_v)     SIGReg: R(z_v, step); VICReg: its variance + covariance terms of z_v alone (the
                                     prediction term is the invariance); Barlow Twins (needs a pair): R(z_v, sg(c))
    loss     = sum_h w_h ((1 - lambda_h) L_pred,h + lambda_h L_reg,h) + sum_h w_h s_h L_local,h

with s_h the level's spatial weight and L_local,h the cell-matching term of ``spatial.py`` on the global views' level
maps (``local_maps[h] [V_g, B, h, w, K]``, needing ``boxes`` and ``same_picture``). With a cell weight g_h, each
level-h token of a global view that shows the picture is pulled to the picture's pooled level-h token t (the mean
over the global views, no gradient): ``+ w_h g_h mean (cell - sg(t))^2``, so a cell says what its picture is
(``cells[h] = (cells [V_g, B, N, D], shown [V_g, B, N], t [B, D])``, key ``cell_h{i}``). With
``loss.cell_standardise`` each dimension of that distance is divided by its variance over all those cells. With a
tile weight u_h, every filler tile of a scene view (another picture of the batch, small) is one more view of its own
picture: ``tiles[h] = (p_t [M, K], rows [M])``, its pooled cells projected and predicted, and
``+ w_h u_h mean_t (p_t - sg(c[rows_t]))^2`` (key ``tile_h{i}``).

Nothing but the regulariser keeps the embeddings from collapsing to a constant, so lambda_h > 0 is required. All
parts are computed in float32. Keys: ``loss``, ``loss_prediction``, ``loss_regularizer``, ``pred_h{i}``,
``reg_h{i}``, the regulariser's other parts (``reg_h0_statistic_max``) and, with spatial terms, ``match_h{i}``,
``match_share_h{i}`` (share of cells matched) and ``local_reg_h{i}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hjepa.losses.spatial import match_loss


class MultiViewLoss(nn.Module):
    """See the module docstring. ``forward(embeddings, predictions, num_global, step)`` with per level
    ``embeddings[h] [V, B, K]`` (globals first) and ``predictions[h] [V, B, K]``."""

    def __init__(self, regularizer: nn.Module, regularizer_weights: Sequence[float], level_weights: Sequence[float],
                 spatial_weights: Sequence[float] | None = None, cell_weights: Sequence[float] | None = None,
                 cell_standardise: bool = False, tile_weights: Sequence[float] | None = None):
        super().__init__()
        if not all(0 < w <= 1 for w in regularizer_weights):
            raise ValueError(
                f"the multiview objective needs loss.regularizer_weight in (0, 1] (lambda of LeJEPA's "
                f"(1 - lambda) * prediction + lambda * regulariser), got {list(regularizer_weights)}"
            )
        self.regularizer = regularizer
        self.regularizer_weights = [float(w) for w in regularizer_weights]
        self.level_weights = [float(w) for w in level_weights]
        self.spatial_weights = [float(w) for w in spatial_weights or [0.0] * len(self.level_weights)]
        self.cell_weights = [float(w) for w in cell_weights or [0.0] * len(self.level_weights)]
        self.cell_standardise = cell_standardise
        self.tile_weights = [float(w) for w in tile_weights or [0.0] * len(self.level_weights)]

    def forward(
        self, embeddings: Sequence[Tensor], predictions: Sequence[Tensor], num_global: int, step: int = 0,
        local_maps: Sequence[Tensor | None] | None = None, boxes: Tensor | None = None,
        same_picture: Tensor | None = None, cells: Sequence[tuple[Tensor, Tensor, Tensor] | None] | None = None,
        tiles: Sequence[tuple[Tensor, Tensor] | None] | None = None,
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total = prediction_total = regularizer_total = None
        with torch.autocast(device_type=embeddings[0].device.type, enabled=False):
            for level, (z, p) in enumerate(zip(embeddings, predictions, strict=True)):
                z, p = z.float(), p.float()
                center = z[:num_global].mean(0)  # [B, K]
                prediction = (p - center).square().mean()
                parts = [self._regularize(view, center, step) for view in z]
                regularizer = torch.stack([part["loss"] for part in parts]).mean()
                lam, weight = self.regularizer_weights[level], self.level_weights[level]
                level_loss = weight * ((1 - lam) * prediction + lam * regularizer)
                out[f"pred_h{level}"] = prediction.detach()
                out[f"reg_h{level}"] = regularizer.detach()
                for key in parts[0]:
                    if key != "loss":
                        out[f"reg_h{level}_{key}"] = torch.stack([part[key].detach() for part in parts]).mean()
                if local_maps is not None and local_maps[level] is not None and self.spatial_weights[level] > 0:
                    local = self._local_loss(local_maps[level].float(), boxes, same_picture, lam, step, level, out)
                    level_loss = level_loss + weight * self.spatial_weights[level] * local
                if cells is not None and cells[level] is not None and self.cell_weights[level] > 0:
                    to_picture = cells_to_picture(*cells[level], standardise=self.cell_standardise)
                    out[f"cell_h{level}"] = to_picture.detach()
                    level_loss = level_loss + weight * self.cell_weights[level] * to_picture
                if tiles is not None and tiles[level] is not None and self.tile_weights[level] > 0:
                    tile_predictions, rows = tiles[level]
                    to_centre = (tile_predictions.float() - center.detach()[rows]).square().mean()
                    out[f"tile_h{level}"] = to_centre.detach()
                    level_loss = level_loss + weight * self.tile_weights[level] * to_centre
                total = level_loss if total is None else total + level_loss
                weighted_prediction = weight * (1 - lam) * prediction.detach()
                weighted_regularizer = weight * lam * regularizer.detach()
                prediction_total = (weighted_prediction if prediction_total is None
                                    else prediction_total + weighted_prediction)
                regularizer_total = (weighted_regularizer if regularizer_total is None
                                     else regularizer_total + weighted_regularizer)
        out["loss"] = total
        out["loss_prediction"] = prediction_total
        out["loss_regularizer"] = regularizer_total
        return out

    def _local_loss(self, maps: Tensor, boxes: Tensor | None, same_picture: Tensor | None, lam: float, step: int,
                    level: int, out: dict[str, Tensor]) -> Tensor:
        """(1 - lambda) cell matching + lambda regulariser of every view's cells; logs its parts into ``out``."""
        if boxes is None:
            raise ValueError("spatial terms need the global views' crop boxes (Views.boxes)")
        match, share = match_loss(maps, boxes, same_picture)
        cells = maps.flatten(1, 3)  # [V, B*h*w, K]
        regularizer = torch.stack([self._regularize(view, view, step)["loss"] for view in cells]).mean()
        out[f"match_h{level}"], out[f"match_share_h{level}"] = match.detach(), share.detach()
        out[f"local_reg_h{level}"] = regularizer.detach()
        return (1 - lam) * match + lam * regularizer

    def _regularize(self, view: Tensor, center: Tensor, step: int) -> dict[str, Tensor]:
        if not getattr(self.regularizer, "pairwise", True):
            return self.regularizer(view, step=step)
        if getattr(self.regularizer, "accepts_single_view", False):
            return self.regularizer(view)
        return self.regularizer(view, center.detach())


def cells_to_picture(cells: Tensor, shown: Tensor, target: Tensor, standardise: bool = False) -> Tensor:
    """Mean squared distance of the cells ``[V, B, N, D]`` that show the picture (``shown [V, B, N]``) to its
    pooled token ``target [B, D]``; with ``standardise``, each dimension's square divided by that dimension's variance
    over those cells (gradient flowing into it), so neither a shared component nor a common scale of the tokens
    shrinks the term: cells close to their picture relative to how far all cells spread, dimension by dimension."""
    cells, target = cells.float(), target.float()
    count = shown.sum().clamp_min(1)
    squares = (cells - target[None, :, None]).square()  # [V, B, N, D]
    if standardise:
        weights = shown[..., None]
        mean = (cells * weights).sum((0, 1, 2)) / count
        variance = ((cells - mean).square() * weights).sum((0, 1, 2)) / count
        squares = squares / variance.clamp_min(1e-6)
    return (squares.mean(-1) * shown).sum() / count
