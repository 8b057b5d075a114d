"""Hamiltonian predictor (seed: HamJEPA): the context summary is a phase-space state (q, p) evolved by leapfrog.

H(q, p) = 1/2 |p|^2 + V(q), with V(q) = base_coeff/2 |q|^2 + residual_scale * MLP(q) (a scalar per token). The
separable form makes the leapfrog (kick-drift-kick) integrator symplectic, so with ``damping=0`` and a small ``dt``
the energy is conserved up to O(dt^2) — a property the tests check.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hjepa.config import ConfigError, HamiltonianConfig
from hjepa.models.pos_embed import sincos_2d
from hjepa.models.predictor import PREDICTORS, gather_tokens


class Potential(nn.Module):
    """V(q) = base_coeff/2 |q|^2 + residual_scale * MLP(q); ``q [..., P] -> V [...]``."""

    def __init__(self, dim: int, hidden_dim: int, base_coeff: float, residual_scale: float) -> None:
        super().__init__()
        self.base_coeff = base_coeff
        self.residual_scale = residual_scale
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.base_coeff * q.pow(2).sum(-1) + self.residual_scale * self.mlp(q).squeeze(-1)

    def force(self, q: torch.Tensor) -> torch.Tensor:
        """-dV/dq, kept in the autograd graph (when grad is on) so training differentiates through the integrator."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not q.requires_grad:
                q = q.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(q).sum(), q, create_graph=create_graph)
        return -grad


MATCHES = ("q", "p", "qp")  # what a Hamiltonian predictor reads out: position, momentum or both


def check_match(match: str) -> int:
    """How many predictor widths the readout of ``match`` takes (``qp``: 2), or ConfigError for an unknown one."""
    if match not in MATCHES:
        raise ConfigError(f"model.hamiltonian.match must be 'q', 'p' or 'qp', got {match!r}")
    return 2 if match == "qp" else 1


def read_state(q: torch.Tensor, p: torch.Tensor, match: str) -> torch.Tensor:
    """The part of the final state ``(q, p)`` [..., D] the loss matches: q, p, or both concatenated [..., 2D]."""
    return torch.cat([q, p], dim=-1) if match == "qp" else q if match == "q" else p


def leapfrog(
    q: torch.Tensor, p: torch.Tensor, potential: Potential, dt: float, steps: int, damping: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate dq/dt = p, dp/dt = -dV/dq with kick-drift-kick steps; damping scales p by (1 - damping*dt)."""
    for _ in range(steps):
        p = p + 0.5 * dt * potential.force(q)
        q = q + dt * p
        p = p + 0.5 * dt * potential.force(q)
        if damping:
            p = p * (1.0 - damping * dt)
    return q, p


def hamiltonian_energy(q: torch.Tensor, p: torch.Tensor, potential: Potential) -> torch.Tensor:
    """H(q, p) = 1/2 |p|^2 + V(q), per token."""
    return 0.5 * p.pow(2).sum(-1) + potential(q)


@PREDICTORS.register("hamiltonian")
class HamiltonianPredictor(nn.Module):
    """Context summary per target position (one cross-attention from the target's position to the context) gives the
    initial state (q0, p0); leapfrog evolves it; the final ``q``, ``p`` or both are read out to the encoder width.

    Same call signature as :class:`TransformerPredictor`: ``[B, K, D], [B, K], [B, Q], [Q] -> [B, Q, D]``.
    """

    def __init__(
        self,
        embed_dim: int,
        grid: tuple[int, int],
        num_levels: int = 1,
        predictor_dim: int = 96,
        num_heads: int = 4,
        hamiltonian: HamiltonianConfig | None = None,
    ) -> None:
        super().__init__()
        ham = hamiltonian or HamiltonianConfig()
        widths = check_match(ham.match)
        self.dt, self.steps, self.damping, self.match = ham.dt, ham.steps, ham.damping, ham.match
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.level_embed = nn.Parameter(torch.zeros(num_levels, predictor_dim))
        self.register_buffer("pos_embed", sincos_2d(predictor_dim, grid)[None], persistent=False)
        self.attend = nn.MultiheadAttention(predictor_dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(predictor_dim)
        self.to_q = nn.Linear(predictor_dim, predictor_dim)
        self.to_p = nn.Linear(predictor_dim, predictor_dim)
        self.potential = Potential(predictor_dim, ham.hidden_dim, ham.base_coeff, ham.residual_scale)
        self.readout = nn.Linear(predictor_dim * widths, embed_dim)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, target_level: torch.Tensor
    ) -> torch.Tensor:
        batch = target_idx.shape[0]
        pos = self.pos_embed.expand(batch, -1, -1).to(context.dtype)
        memory = self.embed(context) + gather_tokens(pos, context_idx)  # [B, K, P]
        queries = gather_tokens(pos, target_idx) + self.level_embed[target_level].to(pos.dtype)  # [B, Q, P]
        summary, _ = self.attend(queries, memory, memory, need_weights=False)
        state = self.norm(summary + queries)
        # The integrator runs in float32: autograd through a bf16 force is too coarse for a symplectic update.
        with torch.autocast(device_type=state.device.type, enabled=False):
            q0, p0 = self.to_q(state.float()), self.to_p(state.float())
            q, p = leapfrog(q0, p0, self.potential, self.dt, self.steps, self.damping)
            out = read_state(q, p, self.match)
            return self.readout(out)
