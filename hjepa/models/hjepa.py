"""The Hierarchical JEPA model: context encoder, EMA target encoder, predictor and per-level heads.

Level k's blocks are aligned to 2^k x 2^k cells, so predictions and targets pool into whole cells; no gradient
reaches the target side.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from hjepa.config import Config, ConfigError
from hjepa.masks.queries import QueryLayout, query_layout
from hjepa.models.ema import ema_update
from hjepa.models.hierarchy import LevelHead, TargetNorm, check_levels, pool_blocks
from hjepa.models.level_encoder import LevelFeatures
from hjepa.models.predictor import PREDICTORS, gather_tokens
from hjepa.models.vit import ViTEncoder

if TYPE_CHECKING:
    from hjepa.masks import MaskBatch


def parameter_counts(model: nn.Module, parts: dict[str, nn.Module]) -> dict[str, int]:
    """Parameters per named part, plus ``trainable`` over the whole model."""
    summary = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    summary["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return summary


class HJEPA(LevelFeatures, nn.Module):
    """``forward(images [B, 3, H, W], masks: MaskBatch, step) -> {'loss', parts..., 'target_pooled' [B, D_h]}``."""

    def __init__(self, cfg: Config, loss_fn: nn.Module | None = None) -> None:
        super().__init__()
        model_cfg = cfg.model
        self.config = cfg
        self.context_encoder = ViTEncoder(model_cfg)
        self.grid = self.context_encoder.grid
        self.num_levels = model_cfg.num_levels
        check_levels(self.grid, self.num_levels)
        dim = self.context_encoder.embed_dim
        self.head_dim = model_cfg.head_dim or dim
        self.context_heads = nn.ModuleList(LevelHead(dim, self.head_dim) for _ in range(self.num_levels))
        self.predictor = PREDICTORS.build_from(
            model_cfg.predictor,
            embed_dim=dim,
            grid=self.grid,
            num_levels=self.num_levels,
            predictor_dim=model_cfg.predictor_embed_dim,
            depth=model_cfg.predictor_depth,
            num_heads=model_cfg.predictor_num_heads,
            drop_path=model_cfg.predictor_drop_path,
            hamiltonian=model_cfg.hamiltonian,
        )
        # Target heads: parameter-free LayerNorm, as I-JEPA's. EMA heads collapse slowly:
        # a context head shrinking to a constant drags its EMA copy along (Fashion-MNIST).
        self.target_encoder = copy.deepcopy(self.context_encoder)
        if model_cfg.target_heads == "ema":
            self.target_heads = copy.deepcopy(self.context_heads)
        elif model_cfg.target_heads == "layernorm":
            if self.head_dim != dim:
                raise ConfigError(
                    f"model.target_heads=layernorm needs model.head_dim == embed_dim ({dim}), got {self.head_dim}"
                )
            self.target_heads = nn.ModuleList(TargetNorm(dim) for _ in range(self.num_levels))
        else:
            raise ConfigError(f"model.target_heads must be 'layernorm' or 'ema', got {model_cfg.target_heads!r}")
        self.ema_heads = model_cfg.target_heads == "ema"
        for param in [*self.target_encoder.parameters(), *self.target_heads.parameters()]:
            param.requires_grad_(False)
        self.loss_fn = loss_fn
        if model_cfg.predictor_batching not in ("packed", "joint", "per_block"):
            raise ConfigError(
                "model.predictor_batching must be 'packed', 'joint' or 'per_block', got "
                f"{model_cfg.predictor_batching!r}"
            )
        self.predictor_batching = model_cfg.predictor_batching
        self.register_buffer("momentum_schedule", torch.ones(1, dtype=torch.float64), persistent=False)

    @property
    def packs_queries(self) -> bool:
        """The predictor runs on a :class:`QueryLayout` (``MaskBatch.with_queries``)."""
        return self.predictor_batching == "packed" and hasattr(self.predictor, "forward_packed")

    @property
    def embed_dim(self) -> int:
        return self.context_encoder.embed_dim

    def forward(self, images: torch.Tensor, masks: MaskBatch, step: int = 0) -> dict[str, torch.Tensor]:
        # Step 1. Targets: full-grid tokens from the EMA encoder, no gradient
        with torch.no_grad():
            self.target_encoder.eval()
            target_tokens = self.target_encoder(images)  # [B, N, D]
            target_pooled = self.target_heads[0](target_tokens).mean(1).float()  # [B, D], for monitoring
        # Step 2. Context: only the kept tokens go through the encoder
        context = self.context_encoder(images, masks.context_idx)  # [B, K, D]
        # Step 3. Predict every block's fine tokens; per level, pool per cell and project
        level_idx = [masks.target_idx[min(k, masks.num_levels - 1)] for k in range(self.num_levels)]  # [B, T_k, M_k]
        shapes = [masks.target_shapes[min(k, masks.num_levels - 1)] for k in range(self.num_levels)]
        layout = masks.queries if masks.num_levels == self.num_levels else None
        predicted = self._predict(context, masks.context_idx, level_idx, layout)  # per level [B*T_k, M_k, D]
        predictions, targets = [], []
        for level, (idx, shape, pred) in enumerate(zip(level_idx, shapes, predicted, strict=True)):
            predictions.append(self.context_heads[level](pool_blocks(pred, shape, level)))  # [B*T_k, cells_k, D_h]
            with torch.no_grad():
                block_targets = gather_tokens(target_tokens, idx.flatten(1)).reshape(pred.shape)  # [B*T_k, M_k, D]
                targets.append(self.target_heads[level](pool_blocks(block_targets, shape, level)))
        # Step 4. Loss
        if self.loss_fn is None:
            raise RuntimeError("this model was built without a loss (inference only); train one built by "
                               "hjepa.train.model.build_training_model")
        out = self.loss_fn(predictions, targets, step=step)
        out["target_pooled"] = target_pooled
        return out

    def _predict(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        level_idx: list[torch.Tensor],
        layout: QueryLayout | None = None,
    ) -> list[torch.Tensor]:
        """Per level ``[B*T_k, M_k, D]`` for blocks ``[B, T_k, M_k]``; ``layout`` if the data pipeline made one."""
        batch = context.shape[0]
        if self.predictor_batching == "per_block":
            out = []
            for level, idx in enumerate(level_idx):
                blocks, length = idx.shape[1], idx.shape[2]
                levels = torch.full((length,), level, dtype=torch.long, device=idx.device)
                pred = self.predictor(
                    context.repeat_interleave(blocks, 0), context_idx.repeat_interleave(blocks, 0),
                    idx.reshape(batch * blocks, length), levels,
                )
                out.append(pred)
            return out
        # joint: one sequence per image for every level's queries (far fewer tokens);
        # packed: the same, each distinct query once, no padding in the per-token layers
        if self.packs_queries:
            if layout is None:
                layout = query_layout(level_idx, context_idx.shape[1], self.grid[0] * self.grid[1])
            pred = self.predictor.forward_packed(context, context_idx, layout)  # [B, Q, D]
        else:
            flat = torch.cat([idx.flatten(1) for idx in level_idx], dim=1)  # [B, Q]
            levels = torch.cat([
                torch.full((idx[0].numel(),), k, dtype=torch.long, device=flat.device)
                for k, idx in enumerate(level_idx)
            ])
            pred = self.predictor(context, context_idx, flat, levels)  # [B, Q, D]
        sizes = [idx[0].numel() for idx in level_idx]
        return [
            chunk.reshape(batch * idx.shape[1], idx.shape[2], -1)
            for chunk, idx in zip(pred.split(sizes, dim=1), level_idx, strict=True)
        ]

    def set_momentum_schedule(self, schedule: torch.Tensor) -> None:
        self.momentum_schedule = schedule.to(torch.float64)

    @torch.no_grad()
    def update_target(self, step: int) -> float:
        """EMA step with the momentum scheduled for ``step``; returns the momentum used."""
        schedule = self.momentum_schedule
        momentum = float(schedule[min(step, len(schedule) - 1)])
        if self.ema_heads:
            ema_update([self.target_encoder, self.target_heads], [self.context_encoder, self.context_heads], momentum)
        else:
            ema_update([self.target_encoder], [self.context_encoder], momentum)
        return momentum

    def parameter_summary(self) -> dict[str, int]:
        parts = {
            "context_encoder": self.context_encoder,
            "target_encoder": self.target_encoder,
            "predictor": self.predictor,
            "context_heads": self.context_heads,
            "target_heads": self.target_heads,
        }
        return parameter_counts(self, parts)
