"""Predictors of the multi-view objective: one view's embedding ``[..., K]`` -> the prediction of the views' centre.

``none`` is LeJEPA (the embedding itself is compared with the centre); ``mlp`` a residual pre-norm MLP, the
transformer block's MLP half; ``hamiltonian`` the HamJEPA seed's predictor on vectors: the embedding gives the
initial state (q0, p0), leapfrog evolves it under H(q, p) = 1/2 |p|^2 + V(q), and q, p or both are read out.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hjepa.config import HamiltonianConfig
from hjepa.models.hamiltonian import Potential, check_match, leapfrog, read_state
from hjepa.registry import Registry

VIEW_PREDICTORS = Registry("view predictor")


@VIEW_PREDICTORS.register("none")
class IdentityViewPredictor(nn.Identity):
    """LeJEPA: no predictor."""

    def __init__(self, dim: int) -> None:
        super().__init__()


@VIEW_PREDICTORS.register("mlp")
class MLPViewPredictor(nn.Module):
    """``z + MLP(LayerNorm(z))``; the last layer starts at zero, so training starts from the identity."""

    def __init__(self, dim: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.fc2(self.act(self.fc1(self.norm(z))))


@VIEW_PREDICTORS.register("hamiltonian")
class HamiltonianViewPredictor(nn.Module):
    """(q0, p0) = (A z, B z); leapfrog under the learned separable Hamiltonian; readout of ``match`` (q, p or qp)."""

    def __init__(self, dim: int, hamiltonian: HamiltonianConfig | None = None) -> None:
        super().__init__()
        ham = hamiltonian or HamiltonianConfig()
        widths = check_match(ham.match)
        self.dt, self.steps, self.damping, self.match = ham.dt, ham.steps, ham.damping, ham.match
        self.to_q = nn.Linear(dim, dim)
        self.to_p = nn.Linear(dim, dim)
        self.potential = Potential(dim, ham.hidden_dim, ham.base_coeff, ham.residual_scale)
        self.readout = nn.Linear(dim * widths, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # The integrator runs in float32: autograd through a bf16 force is too coarse for a symplectic update.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            q, p = leapfrog(self.to_q(z), self.to_p(z), self.potential, self.dt, self.steps, self.damping)
            out = read_state(q, p, self.match)
            return self.readout(out)
