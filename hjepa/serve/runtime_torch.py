"""``TorchRuntime``: the PyTorch back-end, from a checkpoint file / run directory or from a live model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

import hjepa
from hjepa.config import Config
from hjepa.data import dataset_stats
from hjepa.serve.metadata import RuntimeMetadata
from hjepa.serve.runtime import Runtime, resolve_torch_device


def checkpoint_file(path: Path) -> Path:
    """The ``.pt`` file a checkpoint path means (a run directory means its ``checkpoints/last.pt``)."""
    if path.is_dir():
        return path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    return path


def model_identity(model: torch.nn.Module) -> str:
    """SHA-256 over the parameters and buffers of a live model (for caches; no file to hash)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
    return digest.hexdigest()


class TorchRuntime(Runtime):
    """Target encoder + level heads of an ``HJEPA`` model, run with PyTorch on ``device``.

    Serves every level of the model. Use :meth:`from_checkpoint` for a trained run and :meth:`from_model` for a model
    in memory (for example a randomly initialised baseline).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Config,
        device: str | torch.device = "auto",
        identity: str | None = None,
        source: str = "<live model>",
        hjepa_version: str | None = None,
        max_batch: int = 64,
    ) -> None:
        super().__init__()
        self.device = resolve_torch_device(device) if isinstance(device, str) else torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = cfg
        self.source = source
        self.max_batch = int(max_batch)
        self.identity = identity or model_identity(model)
        self.backend = f"torch[{self.device}]"
        mean, std = dataset_stats(cfg.data.dataset)
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
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", max_batch: int = 64) -> TorchRuntime:
        """Load a checkpoint (``.pt`` or run directory); errors are ``CheckpointError`` naming the path."""
        from hjepa.evaluation.cache import file_sha256
        from hjepa.train.checkpoint import load_model

        path = Path(path)
        torch_device = resolve_torch_device(device)
        model, cfg, state = load_model(path, torch_device)
        return cls(
            model,
            cfg,
            torch_device,
            identity=file_sha256(checkpoint_file(path)),
            source=str(path),
            hjepa_version=state.get("hjepa_version"),
            max_batch=max_batch,
        )

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: Config, device: str | torch.device = "auto") -> TorchRuntime:
        """Wrap a live ``HJEPA`` model (its weights hashed for ``identity``)."""
        return cls(model, cfg, device)

    @torch.no_grad()
    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        images = torch.from_numpy(batch).to(self.device, non_blocking=True)
        tokens, pooled = self.model.extract_features(images, level)
        # .cpu() is the sync point, so the caller's timing covers the whole GPU run.
        return tokens.float().cpu().numpy(), pooled.float().cpu().numpy()
