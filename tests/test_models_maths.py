"""Maths of the model checked against hand computations: level-k targets are the layer-normed means of the right
2^k x 2^k patch cells, features do not depend on the module's train/eval state, and the leapfrog integrator is the
second-order, time-reversible, symplectic kick-drift-kick scheme its docstring describes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hjepa.models.hamiltonian import Potential, hamiltonian_energy, leapfrog
from hjepa.train.model import build_training_model
from tests.test_models import make_masks, small_config


class _CaptureLoss(torch.nn.Module):
    """Stands in for the loss: keeps the per-level predictions and targets the model hands to it."""

    def forward(self, predictions, targets, step=0):
        self.predictions, self.targets = predictions, targets
        return {"loss": sum(p.sum() for p in predictions)}


@pytest.mark.parametrize("generator", ["hierarchical", "multiblock"])
def test_level_targets_are_layer_normed_means_of_their_patch_cells(generator: str) -> None:
    torch.manual_seed(0)
    cfg = small_config(num_levels=3)  # 8x8 patch grid
    cfg.masks.generator = generator
    cfg.masks.num_targets = [2, 1, 1]
    model = build_training_model(cfg).eval()
    model.loss_fn = capture = _CaptureLoss()
    masks = make_masks(cfg, model, batch=3, seed=4)
    images = torch.randn(3, 3, 32, 32)
    model(images, masks)
    grid_h, grid_w = model.grid
    with torch.no_grad():
        tokens = model.target_encoder(images)  # [B, 64, D]
    for level in range(3):
        cell = 2**level
        idx = masks.target_idx[level]  # [B, T, h * w] fine indices
        batch, blocks, _ = idx.shape
        h, w = masks.target_shapes[level]
        # By hand: for every cell of every block, the fine patches (r, c) with r // cell, c // cell equal to the
        # cell's coordinates, averaged, then LayerNorm without affine parameters (I-JEPA's target normalisation).
        expected = []
        for b in range(batch):
            for t in range(blocks):
                top, left = int(idx[b, t, 0]) // grid_w, int(idx[b, t, 0]) % grid_w
                assert top % cell == 0 and left % cell == 0  # blocks start on the level's cell lattice
                for cell_row in range(top // cell, (top + h) // cell):
                    for cell_col in range(left // cell, (left + w) // cell):
                        patches = [
                            r * grid_w + c
                            for r in range(cell_row * cell, (cell_row + 1) * cell)
                            for c in range(cell_col * cell, (cell_col + 1) * cell)
                        ]
                        mean = tokens[b, patches].mean(0)
                        expected.append(F.layer_norm(mean, mean.shape))
        expected = torch.stack(expected).view(batch * blocks, (h // cell) * (w // cell), -1)
        torch.testing.assert_close(capture.targets[level], expected, rtol=1e-5, atol=1e-5)
        assert capture.predictions[level].shape == expected.shape
        # The same cells as the exported / evaluated level-k features at those positions.
        features, _ = model.extract_features(images, level)
        assert features.shape[1] == (grid_h // cell) * (grid_w // cell)


def test_extract_features_ignore_the_train_mode_of_the_module() -> None:
    # Presets train with drop_path_rate=0.1: in train mode the target encoder would drop residual branches at
    # random, so features must be computed as in forward's target pass (eval mode), whatever the module's mode.
    torch.manual_seed(0)
    model = build_training_model(small_config(num_levels=2, drop_path_rate=0.5))
    images = torch.randn(4, 3, 32, 32)
    model.eval()
    reference = model.extract_features(images, 1)
    model.train()
    for _ in range(3):
        tokens, pooled = model.extract_features(images, 1)
        torch.testing.assert_close(tokens, reference[0])
        torch.testing.assert_close(pooled, reference[1])


def _potential() -> Potential:
    torch.manual_seed(0)
    return Potential(dim=6, hidden_dim=16, base_coeff=1.0, residual_scale=0.3).double()


def test_leapfrog_one_step_by_hand_on_a_harmonic_potential() -> None:
    # V(q) = k/2 |q|^2 (no residual): force -k q; kick dt/2, drift dt, kick dt/2, then damping (1 - gamma dt).
    potential = Potential(dim=3, hidden_dim=4, base_coeff=2.0, residual_scale=0.0).double()
    q0 = torch.tensor([[1.0, -0.5, 0.25]], dtype=torch.float64)
    p0 = torch.tensor([[0.5, 0.0, -1.0]], dtype=torch.float64)
    dt, gamma = 0.3, 0.5
    p_half = p0 + 0.5 * dt * (-2.0 * q0)
    q1 = q0 + dt * p_half
    p1 = (p_half + 0.5 * dt * (-2.0 * q1)) * (1 - gamma * dt)
    with torch.no_grad():
        q, p = leapfrog(q0, p0, potential, dt=dt, steps=1, damping=gamma)
    torch.testing.assert_close(q, q1)
    torch.testing.assert_close(p, p1)


def test_leapfrog_energy_error_is_second_order_in_dt() -> None:
    potential = _potential()
    torch.manual_seed(1)
    q0, p0 = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    e0 = hamiltonian_energy(q0, p0, potential)
    errors = []
    with torch.no_grad():
        for steps in (20, 40, 80):  # the same time span 2.0 at dt = 0.1, 0.05, 0.025
            q, p = leapfrog(q0, p0, potential, dt=2.0 / steps, steps=steps)
            errors.append((hamiltonian_energy(q, p, potential) - e0).abs().max().item())
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert coarse / fine == pytest.approx(4.0, rel=0.05)  # halving dt quarters the error: O(dt^2)


def test_leapfrog_is_time_reversible_and_symplectic() -> None:
    potential = _potential()
    torch.manual_seed(2)
    q0, p0 = torch.randn(1, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    with torch.no_grad():
        q, p = leapfrog(q0, p0, potential, dt=0.1, steps=10)
        q_back, p_back = leapfrog(q, -p, potential, dt=0.1, steps=10)
    torch.testing.assert_close(q_back, q0, rtol=0, atol=1e-12)
    torch.testing.assert_close(-p_back, p0, rtol=0, atol=1e-12)

    def flow(state: torch.Tensor) -> torch.Tensor:
        q, p = leapfrog(state[None, :6], state[None, 6:], potential, dt=0.2, steps=3)
        return torch.cat([q[0], p[0]])

    jacobian = torch.autograd.functional.jacobian(flow, torch.cat([q0[0], p0[0]]))
    omega = torch.zeros(12, 12, dtype=torch.float64)
    omega[:6, 6:], omega[6:, :6] = torch.eye(6), -torch.eye(6)
    torch.testing.assert_close(jacobian.T @ omega @ jacobian, omega, rtol=0, atol=1e-10)  # J^T Omega J = Omega
