"""The multi-view JEPA model (LeJEPA's recipe on hjepa's hierarchy): views of one image predict their common centre.

Per view the encoder runs on the whole view (global views at ``img_size``, local views smaller, with the position
table spread over the same extent). Per level k the view's embedding is exactly the feature that inference exports:
the level-k tokens (2^k x 2^k average pools through the parameter-free target norm, or with ``model.level_heads=merge``
each window merged by a trained head, ``hierarchy.MergeHead``), averaged over the grid. A
per-level MLP projector maps it to the loss's space, an optional predictor maps each view's projection towards the
centre of the global views, and SIGReg (or VICReg / Barlow Twins) on the projections keeps them from collapsing.

The target encoder is kept as in the masked objective so export, evaluation and serving read the same fields: an
EMA copy of the encoder with the configured momentum schedule (momentum 0, the multi-view presets' setting, makes it
the trained encoder itself; a positive momentum gives a weight average).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from hjepa.config import Config, ConfigError
from hjepa.data.scenes import cell_tiles, picture_cells
from hjepa.models.hierarchy import MergeHead, TargetNorm, apply_head, check_levels
from hjepa.models.hjepa import HJEPA, parameter_counts
from hjepa.models.level_encoder import LevelFeatures
from hjepa.models.view_predictor import VIEW_PREDICTORS
from hjepa.models.vit import ViTEncoder

if TYPE_CHECKING:
    from hjepa.data.multiview import Views


def local_projector(dim: int, hidden: int, out: int) -> nn.Sequential:
    """The cells' expander: Linear, BatchNorm, GELU, Linear; ``[N, dim] -> [N, out]`` (one hidden layer: cells are
    many, and the pooled projector already carries the deep one)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, out))


def projector(dim: int, hidden: int, out: int) -> nn.Sequential:
    """LeJEPA's / VICReg's expander: (Linear, BatchNorm, GELU) x 2, then Linear; ``[N, dim] -> [N, out]``."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
        nn.Linear(hidden, out),
    )


class MultiViewJEPA(LevelFeatures, nn.Module):
    """``forward(views: Views, masks=None, step) -> {'loss', parts..., 'target_pooled' [B, D]}``."""

    objective = "multiview"
    packs_queries = False  # no mask layout to prepare

    # Momentum schedule, EMA update and width: the masked model's functions.
    set_momentum_schedule = HJEPA.set_momentum_schedule
    update_target = HJEPA.update_target
    embed_dim = HJEPA.embed_dim

    def __init__(self, cfg: Config, loss_fn: nn.Module | None = None) -> None:
        super().__init__()
        model_cfg = cfg.model
        self.config = cfg
        self.context_encoder = ViTEncoder(model_cfg)
        self.grid = self.context_encoder.grid
        self.num_levels = model_cfg.num_levels
        check_levels(self.grid, self.num_levels)
        dim = self.context_encoder.embed_dim
        if (model_cfg.head_dim or dim) != dim or model_cfg.target_heads != "layernorm":
            raise ConfigError("model.objective=multiview uses parameter-free level norms: leave model.head_dim unset "
                             "and model.target_heads=layernorm")
        local_size, patch = cfg.data.local_img_size, model_cfg.patch_size
        if cfg.data.num_local_views and (local_size % patch or (local_size // patch) % 2 ** (self.num_levels - 1)):
            raise ConfigError(
                f"data.local_img_size={cfg.data.local_img_size} must be a multiple of model.patch_size "
                f"({model_cfg.patch_size}) whose grid divides by 2^{self.num_levels - 1} for {self.num_levels} levels"
            )
        self.head_dim = dim
        self.level_norm = TargetNorm(dim)
        self.context_heads = nn.ModuleList()  # pooled levels: no trainable heads, the embedding is exported
        if model_cfg.level_heads == "merge":  # level 0 keeps the norm; levels above merge their windows
            heads = self.context_encoder.vit.blocks[0].attn.num_heads
            self.context_heads = nn.ModuleList(
                [TargetNorm(dim), *(MergeHead(dim, level, heads) for level in range(1, self.num_levels))])
        self.ema_heads = len(self.context_heads) > 0  # the exported heads follow the trained ones
        self.projectors = nn.ModuleList(
            projector(dim, model_cfg.projector_hidden, model_cfg.projector_dim) for _ in range(self.num_levels)
        )
        ham = model_cfg.hamiltonian
        self.predictors = nn.ModuleList(
            VIEW_PREDICTORS.build_from(model_cfg.view_predictor, dim=model_cfg.projector_dim,
                                       hidden_dim=ham.hidden_dim, hamiltonian=ham)
            for _ in range(self.num_levels)
        )
        # Spatial terms: a cell projector per level (VICRegL's local expander).
        weights = list(cfg.loss.spatial_weight) or [0.0]
        self.spatial_levels = [level for level in range(self.num_levels) if weights[min(level, len(weights) - 1)] > 0]
        self.local_projectors = nn.ModuleDict({
            str(level): local_projector(dim, model_cfg.projector_hidden, model_cfg.projector_dim)
            for level in self.spatial_levels
        })
        cell_weights = list(cfg.loss.cell_weight) or [0.0]
        self.cell_levels = [level for level in range(self.num_levels)
                            if cell_weights[min(level, len(cell_weights) - 1)] > 0]
        tile_weights = list(cfg.loss.tile_weight) or [0.0]
        self.tile_levels = [level for level in range(self.num_levels)
                            if tile_weights[min(level, len(tile_weights) - 1)] > 0]
        self.scene_anchor = cfg.data.scene_anchor
        self.target_encoder = copy.deepcopy(self.context_encoder)
        self.target_heads = (copy.deepcopy(self.context_heads) if self.ema_heads
                             else nn.ModuleList(TargetNorm(dim) for _ in range(self.num_levels)))
        for param in [*self.target_encoder.parameters(), *self.target_heads.parameters()]:
            param.requires_grad_(False)
        self.loss_fn = loss_fn
        self.register_buffer("momentum_schedule", torch.ones(1, dtype=torch.float64), persistent=False)

    def level_tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the normed level-k tokens ``[B, N_k, D]`` of ``images`` (the features inference exports)."""
        tokens = self.context_encoder(images)
        patch = self.context_encoder.patch_size
        grid = (images.shape[-2] // patch, images.shape[-1] // patch)
        heads = self.context_heads if self.ema_heads else [self.level_norm] * self.num_levels
        return [apply_head(head, tokens, grid, level) for level, head in enumerate(heads)]

    def level_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per level, ``[B, D]``: the mean over the level-k grid of the normed level-k tokens of ``images``."""
        return [tokens.mean(1) for tokens in self.level_tokens(images)]

    def forward(self, views: Views, masks: object = None, step: int = 0) -> dict[str, torch.Tensor]:
        batch, num_global = views.batch_size, views.num_global
        # Step 1. Encode: global views in one batch, local views (another size) in another.
        global_tokens = self.level_tokens(views.globals_.flatten(0, 1))
        per_group = [self._pooled(global_tokens, views)]
        if views.locals_ is not None:
            per_group.append(self.level_embeddings(views.locals_.flatten(0, 1)))
        # Step 2. Per level: project every view, predict the centre from each.
        embeddings, predictions = [], []
        for level in range(self.num_levels):
            pooled = torch.cat([group[level] for group in per_group])  # [V*B, D], globals first
            z = self.projectors[level](pooled)
            embeddings.append(z.view(-1, batch, z.shape[-1]))
            predictions.append(self.predictors[level](z).view(-1, batch, z.shape[-1]))
        # Step 3. Per spatial level: project the global views' cells, [V_g, B, h, w, K].
        local_maps: list[torch.Tensor | None] = [None] * self.num_levels
        for level in self.spatial_levels:
            tokens = global_tokens[level]  # [V_g*B, N_k, D]
            side = math.isqrt(tokens.shape[1])
            cells = self.local_projectors[str(level)](tokens.flatten(0, 1))
            local_maps[level] = cells.view(num_global, batch, side, side, -1)
        # Step 4. Per cell level: the cells that show the picture, and its pooled token as their target.
        cells = [self._cells(global_tokens[level], per_group[0][level], views) if level in self.cell_levels else None
                 for level in range(self.num_levels)]
        # Step 5. Per tile level: every filler tile of a scene view, a small view of its own picture.
        tile_map = self._tile_map(views, math.isqrt(global_tokens[0].shape[1])) if self.tile_levels else None
        tiles = [self._tile_views(global_tokens[level], tile_map, level)
                 if tile_map is not None and level in self.tile_levels else None for level in range(self.num_levels)]
        # Step 6. Loss.
        out = self.loss_fn(embeddings, predictions, num_global, step=step, local_maps=local_maps,
                           boxes=views.boxes, same_picture=views.same_picture, cells=cells, tiles=tiles)
        out["target_pooled"] = per_group[0][0][:batch].detach().float()
        return out

    def _pooled(self, level_tokens: list[torch.Tensor], views: Views) -> list[torch.Tensor]:
        """Per level ``[V_g*B, D]``: the mean of a view's tokens, over the picture's cells only in scene views,
        each level-k cell weighted by its share of level-0 cells on the picture."""
        if views.scene_rows is None:
            return [tokens.mean(1) for tokens in level_tokens]
        side = math.isqrt(level_tokens[0].shape[1])
        shown = picture_cells(views.boxes.flatten(0, 1), side).unsqueeze(1)  # [V*B, 1, h, w]
        pooled = []
        for level, tokens in enumerate(level_tokens):
            weight = F.avg_pool2d(shown, 2**level).flatten(1).unsqueeze(-1).to(tokens.dtype)  # [V*B, N_k, 1]
            pooled.append((tokens * weight).sum(1) / weight.sum(1).clamp_min(1e-6))
        return pooled

    def _cells(self, tokens: torch.Tensor, pooled: torch.Tensor, views: Views) -> tuple[torch.Tensor, ...]:
        """Level-k cells ``[V_g, B, N_k, D]``, where they show the picture ``[V_g, B, N_k]`` and their target: the
        picture's pooled level-k token, averaged over the global views (anchored scene rows: the first view's, the
        whole picture), ``[B, D]``."""
        num_global, batch = views.num_global, views.batch_size
        side = math.isqrt(tokens.shape[1])
        cells = tokens.view(num_global, batch, side * side, -1)
        per_view = pooled.view(num_global, batch, -1)
        target = per_view.mean(0)
        if self.scene_anchor and views.scene_rows is not None:
            target = torch.where(views.scene_rows[:, None], per_view[0], target)
        target = target.detach()
        if views.boxes is None:
            return cells, cells.new_ones(cells.shape[:3]), target
        shown = picture_cells(views.boxes.flatten(0, 1), side).view(num_global, batch, side * side)
        return cells, shown.to(cells.dtype), target

    def _tile_map(self, views: Views, fine: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Where the filler tiles of the global views lie on the level-0 grid (``fine x fine``), once per step:
        ``[V*B, T, fine, fine]`` float, 1 on a cell whose centre is on tile t when t holds another row's picture
        (``Scenes.tiles``), and the row each tile shows ``[V*B, T]``; None without scenes."""
        if views.tiles is None or views.boxes is None:
            return None
        shows = views.tiles.flatten(0, 1)  # [V*B, T]
        index = cell_tiles(views.boxes.flatten(0, 1), views.placement.flatten(0, 1), fine)  # [V*B, fine^2]
        row = torch.arange(views.batch_size, device=shows.device).repeat(views.num_global)
        filler = (shows >= 0) & (shows != row[:, None])
        tile = torch.arange(shows.shape[1], device=index.device)
        on_tile = (index[:, None] == tile[None, :, None]) & filler[..., None]  # [V*B, T, fine^2]
        return on_tile.float().view(*shows.shape, fine, fine), shows

    def _tile_views(self, tokens: torch.Tensor, tile_map: tuple[torch.Tensor, torch.Tensor],
                    level: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The filler tiles of ``tile_map`` (``_tile_map``) as small views: each tile's level-k cells pooled
        (weighted by the share of their level-0 cells on the tile), projected and predicted, ``[M, K]``, with the row
        whose picture each shows ``[M]``. A tile counts where it covers at least half a level-k cell's worth; None
        with fewer than two such tiles."""
        on_tile, shows = tile_map
        count, fine = on_tile.shape[1], on_tile.shape[-1]
        side = fine // 2**level
        weights = F.avg_pool2d(on_tile.flatten(0, 1).unsqueeze(1), 2**level).view(-1, count, side * side)
        coverage = weights.sum(-1)  # [V*B, T], in level-k cells
        keep = coverage >= 0.5
        if int(keep.sum()) < 2:  # BatchNorm needs two rows
            return None
        pooled = torch.einsum("btn,bnd->btd", weights.to(tokens.dtype), tokens)[keep]  # select, then divide:
        pooled = pooled / coverage[keep][:, None].to(tokens.dtype)  # no 0/0 on the tiles left out
        z = self.projectors[level](pooled)
        return self.predictors[level](z), shows[keep]

    def parameter_summary(self) -> dict[str, int]:
        parts = {
            "context_encoder": self.context_encoder,
            "target_encoder": self.target_encoder,
            "projectors": self.projectors,
            "predictors": self.predictors,
            "local_projectors": self.local_projectors,
            "context_heads": self.context_heads,
            "target_heads": self.target_heads,
        }
        return parameter_counts(self, parts)
