"""``TorchRuntime``: the PyTorch back-end, from a checkpoint file / run directory or from a live model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

import hjepa
from hjepa.config import Config
from hjepa.inference.artifacts import artifact
from hjepa.inference.artifacts.hashing import model_identity
from hjepa.inference.artifacts.metadata import RuntimeMetadata
from hjepa.inference.runtimes.runtime import RUNTIMES, Runtime, resolve_torch_device


@RUNTIMES.register("torch")
class TorchRuntime(Runtime):
    """Target encoder and level heads on PyTorch, every level; from a checkpoint or a model in memory."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Config,
        device: str | torch.device = "auto",
        identity: str | None = None,
        source: str = "<live model>",
        hjepa_version: str | None = None,
        max_batch: int = 64,
        normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        provenance: dict | None = None,
    ) -> None:
        super().__init__()
        self.device = resolve_torch_device(device) if isinstance(device, str) else torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = cfg
        self.source = source
        self.max_batch = int(max_batch)
        self.identity = identity or model_identity(model)
        self.backend = f"torch[{self.device}]"
        self.bf16 = False
        # mean / std travel in the spec; a live model has its config's
        mean, std = normalisation or artifact.normalisation(cfg)
        levels = range(model.num_levels)
        self.metadata = RuntimeMetadata(
            img_size=cfg.model.img_size,
            patch_size=cfg.model.patch_size,
            mean=tuple(mean),
            std=tuple(std),
            num_levels=model.num_levels,
            grids={k: tuple(model.level_grid(k)) for k in levels},
            embed_dims={k: int(model.target_heads[k].out_features) for k in levels},
            dataset=cfg.data.dataset,
            input_format="float_nchw",
            precision="fp32",
            checkpoint_sha256=identity,
            hjepa_version=hjepa_version or hjepa.__version__,
            provenance=dict(provenance or {}),
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", max_batch: int = 64) -> TorchRuntime:
        """A checkpoint (``.pt`` or run directory) or an artifact; errors name the path."""
        path = Path(path)
        torch_device = resolve_torch_device(device)
        loaded = artifact.load_source_model(path, torch_device)
        return cls(
            loaded.model,
            loaded.config,
            torch_device,
            identity=loaded.source_sha256,
            source=str(path),
            hjepa_version=loaded.hjepa_version,
            max_batch=max_batch,
            normalisation=(loaded.mean, loaded.std),
            provenance={k: v for k, v in loaded.spec.get("provenance", {}).items() if v is not None},
        )

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: Config, device: str | torch.device = "auto") -> TorchRuntime:
        """A live ``HJEPA`` model, its weights hashed for ``identity``."""
        return cls(model, cfg, device)

    def use_bf16(self) -> None:
        """bf16 autocast, float32 out: much faster on bf16 CPUs, features differ in the third digit."""
        self.bf16 = True
        self.metadata = dataclasses.replace(self.metadata, precision="bf16")

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        images = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with self._autocast():
            tokens, pooled = self.model.extract_features(images, level)
        # note: .cpu() is the sync point, so timings cover the GPU run
        return tokens.float().cpu().numpy(), pooled.float().cpu().numpy()

    @torch.no_grad()
    def _forward_levels(
        self, batch: np.ndarray, levels: list[int], with_tokens: bool
    ) -> dict[int, tuple[np.ndarray | None, np.ndarray]]:
        """Every level from one encoder pass."""
        images = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with self._autocast():
            out = self.model.extract_levels(images, levels, with_tokens=with_tokens)
        return {
            level: (None if tokens is None else tokens.float().cpu().numpy(), pooled.float().cpu().numpy())
            for level, (tokens, pooled) in out.items()
        }
