"""VICReg (Bardes, Ponce & LeCun, 2022): variance-invariance-covariance regularisation.

As facebookresearch/vicreg ``main_vicreg.py``; x, y ``[N, D]`` (``[B, N, D]`` is flattened)::

    invariance = 1/(N D) sum_{n,k} (x_nk - y_nk)^2                                     (F.mse_loss)
    x <- x - mean_n x,  y <- y - mean_n y
    std_k      = sqrt(var_n(x_k) + eps)                 (unbiased variance over the N samples)
    variance   = mean_k relu(gamma - std_x,k) / 2 + mean_k relu(gamma - std_y,k) / 2
    cov        = x^T x / (N - 1)                                                       ([D, D])
    covariance = sum_{i != j} cov_x,ij^2 / D + sum_{i != j} cov_y,ij^2 / D
    loss       = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance

With ``y=None`` only x's terms, unhalved. Statistics are per rank: the reference's all-gather costs one per level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hjepa.config import LossConfig


def off_diagonal(matrix: Tensor) -> Tensor:
    """The D*(D-1) off-diagonal entries of ``[D, D]``, flattened."""
    n, m = matrix.shape
    if n != m:
        raise ValueError(f"off_diagonal needs a square matrix, got {tuple(matrix.shape)}")
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def flatten_samples(x: Tensor, name: str) -> Tensor:
    """``[N, D]`` unchanged, ``[B, N, D]`` (or more leading dims) -> ``[B*N, D]``."""
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape [N, D] or [B, N, D], got {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-1])


class VICRegLoss(nn.Module):
    """VICReg loss; ``forward(x, y=None)`` returns ``{'loss', 'invariance', 'variance', 'covariance'}``."""

    pairwise = True  # CombinedLoss passes the (detached) targets as y
    accepts_single_view = True  # forward(x): the multi-view loss's regulariser

    def __init__(
        self,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.sim_coeff = float(sim_coeff)
        self.std_coeff = float(std_coeff)
        self.cov_coeff = float(cov_coeff)
        self.gamma = float(gamma)
        self.eps = float(eps)

    @classmethod
    def from_config(cls, cfg: LossConfig) -> VICRegLoss:
        return cls(cfg.vicreg_sim, cfg.vicreg_var, cfg.vicreg_cov, cfg.vicreg_gamma, cfg.vicreg_eps)

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """x, y: ``[N, D]`` or ``[B, N, D]`` of equal shape; all outputs are float32 scalars."""
        if y is not None and x.shape != y.shape:
            raise ValueError(f"VICReg needs x and y of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = flatten_samples(x, "x").float()
            num_samples = x.shape[0]
            if num_samples < 2:
                raise ValueError(f"VICReg needs at least 2 samples to estimate a variance, got {num_samples}")
            if y is None:
                invariance = x.new_zeros(())
                variance = self._variance(x)
                covariance = self._covariance(x)
            else:
                y = flatten_samples(y, "y").float()
                invariance = F.mse_loss(x, y)
                variance = self._variance(x) / 2 + self._variance(y) / 2
                covariance = self._covariance(x) + self._covariance(y)
            loss = self.sim_coeff * invariance + self.std_coeff * variance + self.cov_coeff * covariance
        return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}

    def _variance(self, x: Tensor) -> Tensor:
        std = torch.sqrt(x.var(dim=0) + self.eps)  # unbiased, as torch.var in the reference
        return F.relu(self.gamma - std).mean()

    def _covariance(self, x: Tensor) -> Tensor:
        x = x - x.mean(dim=0)
        cov = (x.T @ x) / (x.shape[0] - 1)
        return off_diagonal(cov).pow(2).sum() / x.shape[1]
