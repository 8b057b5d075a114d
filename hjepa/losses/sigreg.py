"""SIGReg (LeJEPA, Balestriero & LeCun, 2025): sketched isotropic Gaussian regularisation.

Embeddings z ``[N, D]`` (``[B, N, D]`` is flattened to ``[B*N, D]``) are projected on M random unit directions
A ``[D, M]``; each 1-D projection h = z a ``[N]`` is compared with a standard normal by the Epps-Pulley statistic::

    phi_hat(t) = 1/N sum_n exp(i t h_n) = mean_n cos(t h_n) + i mean_n sin(t h_n)    (empirical char. function)
    phi(t)     = exp(-t^2 / 2)                                                       (N(0, 1))
    EP(a)      = N * int_{-t_max}^{t_max} |phi_hat(t) - phi(t)|^2 w(t) dt,   w(t) = exp(-t^2 / 2)
               = N * 2 * trapezoid_{t in linspace(0, t_max, num_points)} [(Re phi_hat - phi)^2 + (Im phi_hat)^2] w
    loss       = mean_a EP(a),  statistic_max = max_a EP(a)

Directions come from a CPU generator seeded ``seed + step``, so every rank and device draws the same ones; under
``torch.distributed`` phi_hat is averaged over ranks and N is the global count.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hjepa import dist
from hjepa.config import LossConfig
from hjepa.device import to_device_async


def random_directions(dim: int, num_slices: int, seed: int) -> Tensor:
    """``[dim, num_slices]`` float32 on the CPU, columns of unit norm, a deterministic function of ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    directions = torch.randn(dim, num_slices, generator=generator, dtype=torch.float32)
    return directions / directions.norm(dim=0, keepdim=True).clamp_min(1e-12)


class SIGRegLoss(nn.Module):
    """``forward(z, step)`` -> ``{'loss', 'statistic_max'}`` over ``num_slices`` directions, ``num_points`` nodes."""

    pairwise = False  # CombinedLoss passes step= instead of a second view

    def __init__(self, num_slices: int = 256, num_points: int = 17, t_max: float = 3.0, seed: int = 0) -> None:
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"SIGReg num_slices must be at least 1, got {num_slices}")
        if num_points < 2:
            raise ValueError(f"SIGReg num_points must be at least 2 for the trapezoid rule, got {num_points}")
        if t_max <= 0:
            raise ValueError(f"SIGReg t_max must be positive, got {t_max}")
        self.num_slices = int(num_slices)
        self.num_points = int(num_points)
        self.t_max = float(t_max)
        self.seed = int(seed)
        t = torch.linspace(0.0, self.t_max, self.num_points, dtype=torch.float32)
        spacing = self.t_max / (self.num_points - 1)
        trapezoid = torch.full((self.num_points,), spacing)
        trapezoid[[0, -1]] = spacing / 2
        gaussian_cf = torch.exp(-0.5 * t.square())
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("target_cf", gaussian_cf, persistent=False)  # phi(t)
        # 2: the integrand is even; w(t) equals phi(t)
        self.register_buffer("quadrature", 2 * trapezoid * gaussian_cf, persistent=False)

    @classmethod
    def from_config(cls, cfg: LossConfig) -> SIGRegLoss:
        return cls(num_slices=cfg.sigreg_slices, num_points=cfg.sigreg_points, t_max=cfg.sigreg_t_max)

    def directions_for_step(self, dim: int, step: int) -> Tensor:
        """``[dim, num_slices]`` unit directions of ``step``, on the CPU."""
        return random_directions(dim, self.num_slices, self.seed + int(step))

    def forward(self, z: Tensor, step: int = 0, directions: Tensor | None = None) -> dict[str, Tensor]:
        """z: ``[N, D]`` or ``[B, N, D]``; directions: optional ``[D, M]`` (columns are normalised here)."""
        if z.dim() < 2:
            raise ValueError(f"SIGReg input must have shape [N, D] or [B, N, D], got {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.reshape(-1, z.shape[-1]).float()
            dim = z.shape[1]
            if directions is None:
                directions = self.directions_for_step(dim, step)
            elif directions.dim() != 2 or directions.shape[0] != dim:
                raise ValueError(f"SIGReg directions must have shape [{dim}, M], got {tuple(directions.shape)}")
            else:
                directions = directions.float()
                directions = directions / directions.norm(dim=0, keepdim=True).clamp_min(1e-12)
            directions = to_device_async(directions, z.device)  # must not sync the GPU
            projections = z @ directions  # [N, M]
            angles = projections.unsqueeze(-1) * self.t.to(z.device)  # [N, M, T]
            cos_mean, sin_mean, num_samples = self._global_means(angles.cos(), angles.sin())  # [M, T] each
            error = (cos_mean - self.target_cf.to(z.device)).square() + sin_mean.square()  # [M, T]
            statistic = num_samples * (error @ self.quadrature.to(z.device))  # [M]
        return {"loss": statistic.mean(), "statistic_max": statistic.detach().max()}

    @staticmethod
    def _global_means(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Means over N of ``[N, M, T]`` tables across ranks, and the global N."""
        local_count = cos.shape[0]
        cos_mean, sin_mean = cos.mean(dim=0), sin.mean(dim=0)
        if not dist.is_initialized():
            return cos_mean, sin_mean, torch.full((), float(local_count), device=cos.device)  # a fill, not a copy
        # sums and count in one collective: exact even when ranks hold different N
        count = torch.full((1,), float(local_count), device=cos.device)
        packed = torch.cat([cos.sum(0).flatten(), sin.sum(0).flatten(), count])
        packed = dist.all_reduce_mean(packed.detach().clone())
        global_count = packed[-1] * dist.world_size()
        cos_global = packed[: cos_mean.numel()].view_as(cos_mean) * dist.world_size() / global_count
        sin_global = packed[cos_mean.numel() : -1].view_as(sin_mean) * dist.world_size() / global_count
        # value: the global mean; gradient: this rank's, scaled so DDP's average is the global gradient
        scale = dist.world_size() * local_count / global_count
        cos_mean = cos_mean * scale + (cos_global - cos_mean * scale).detach()
        sin_mean = sin_mean * scale + (sin_global - sin_mean * scale).detach()
        return cos_mean, sin_mean, global_count
