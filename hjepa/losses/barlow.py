"""Barlow Twins (Zbontar et al., 2021): the cross-correlation of two views towards the identity.

Standardised as facebookresearch/barlowtwins' ``BatchNorm1d(affine=False)``; x, y ``[N, D]`` (or ``[B, N, D]``)::

    a_nk = (x_nk - mean_n x_k) / sqrt(var_n(x_k) + eps)          (likewise b from y)
    c    = a^T b / N                                             ([D, D])
    on_diagonal  = sum_i (1 - c_ii)^2
    off_diagonal = lambda_offdiag * sum_{i != j} c_ij^2
    loss         = on_diagonal + off_diagonal

With ``y=None``, x's auto-correlation: only the decorrelation term informs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hjepa.config import LossConfig
from hjepa.losses.vicreg import flatten_samples, off_diagonal


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins loss; ``forward(x, y)`` returns ``{'loss', 'on_diagonal', 'off_diagonal'}``."""

    pairwise = True  # CombinedLoss passes the (detached) targets as y

    def __init__(self, lambda_offdiag: float = 0.005, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_offdiag = float(lambda_offdiag)
        self.eps = float(eps)

    @classmethod
    def from_config(cls, cfg: LossConfig) -> BarlowTwinsLoss:
        return cls(lambda_offdiag=cfg.barlow_lambda)

    def standardize(self, x: Tensor) -> Tensor:
        """``[N, D]`` -> per-dimension zero mean, unit (biased) variance over N."""
        mean = x.mean(dim=0)
        var = x.var(dim=0, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """x, y: ``[N, D]`` or ``[B, N, D]`` of equal shape; all outputs are float32 scalars."""
        if y is not None and x.shape != y.shape:
            raise ValueError(f"Barlow Twins needs x and y of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            a = flatten_samples(x, "x").float()
            if a.shape[0] < 2:
                raise ValueError(f"Barlow Twins needs at least 2 samples to standardise, got {a.shape[0]}")
            a = self.standardize(a)
            b = a if y is None else self.standardize(flatten_samples(y, "y").float())
            c = (a.T @ b) / a.shape[0]
            on_diagonal = (1 - torch.diagonal(c)).pow(2).sum()
            off_diag = self.lambda_offdiag * off_diagonal(c).pow(2).sum()
        return {"loss": on_diagonal + off_diag, "on_diagonal": on_diagonal, "off_diagonal": off_diag}
