"""VICReg and Barlow Twins against explicit-loop computations and transcriptions of the reference code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hjepa.losses import BarlowTwinsLoss, VICRegLoss


def _reference_vicreg(x: torch.Tensor, y: torch.Tensor, sim: float, std: float, cov: float) -> torch.Tensor:
    """facebookresearch/vicreg main_vicreg.py VICReg.forward, one process (batch_size = len(x))."""

    def off_diagonal(m: torch.Tensor) -> torch.Tensor:
        n, _ = m.shape
        return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(num_features) + off_diagonal(cov_y).pow_(2).sum().div(num_features)
    return sim * repr_loss + std * std_loss + cov * cov_loss


def _loop_vicreg_parts(x: np.ndarray, y: np.ndarray, gamma: float, eps: float) -> tuple[float, float, float]:
    """(invariance, variance, covariance) with explicit loops in float64."""
    n, d = x.shape
    invariance = sum((x[i, k] - y[i, k]) ** 2 for i in range(n) for k in range(d)) / (n * d)

    def branch(z: np.ndarray) -> tuple[float, float]:
        mean = [sum(z[i, k] for i in range(n)) / n for k in range(d)]
        cov = [
            [sum((z[i, a] - mean[a]) * (z[i, b] - mean[b]) for i in range(n)) / (n - 1) for b in range(d)]
            for a in range(d)
        ]
        hinge = sum(max(0.0, gamma - (cov[k][k] + eps) ** 0.5) for k in range(d)) / d
        off = sum(cov[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
        return hinge, off

    (hx, ox), (hy, oy) = branch(x), branch(y)
    return invariance, hx / 2 + hy / 2, ox + oy


def test_vicreg_matches_loops_and_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 0.7
    y = x + 0.3 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    out = VICRegLoss(sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5)(x, y)
    inv, var, cov = _loop_vicreg_parts(x.numpy(), y.numpy(), gamma=1.0, eps=1e-4)
    assert var > 0 and cov > 0  # the chosen input exercises every term
    assert out["invariance"].item() == pytest.approx(inv, rel=1e-5)
    assert out["variance"].item() == pytest.approx(var, rel=1e-5)
    assert out["covariance"].item() == pytest.approx(cov, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2.0 * inv + 3.0 * var + 0.5 * cov, rel=1e-5)
    reference = _reference_vicreg(x, y, 25.0, 25.0, 1.0)
    assert VICRegLoss()(x, y)["loss"].item() == pytest.approx(reference.item(), rel=1e-5)


def test_vicreg_gamma_and_identical_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=gen)
    same = VICRegLoss()(x, x.clone())
    assert same["invariance"].item() == 0.0
    # unit-variance data is below gamma = 3 in every dim, above gamma = 0.1 in every dim
    assert VICRegLoss(gamma=3.0)(x, x)["variance"].item() > 1.0
    assert VICRegLoss(gamma=0.1)(x, x)["variance"].item() == 0.0
    # collapse (all rows equal) gives the maximal hinge gamma - sqrt(eps) in every dim
    collapsed = torch.ones(16, 8)
    assert VICRegLoss()(collapsed, collapsed)["variance"].item() == pytest.approx(1.0 - 1e-2, rel=1e-4)


def test_vicreg_single_branch_and_token_shapes() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 4, generator=gen)
    flat = x.reshape(15, 4)
    one = VICRegLoss()(x)
    inv, var, cov = _loop_vicreg_parts(flat.double().numpy(), flat.double().numpy(), 1.0, 1e-4)
    assert one["invariance"].item() == 0.0
    assert one["variance"].item() == pytest.approx(var, rel=1e-4)  # both halves equal -> the one-branch hinge
    assert one["covariance"].item() == pytest.approx(cov / 2, rel=1e-4)
    y = torch.randn(3, 5, 4, generator=gen)
    assert VICRegLoss()(x, y)["loss"].item() == pytest.approx(VICRegLoss()(flat, y.reshape(15, 4))["loss"].item())


def test_vicreg_errors_and_autocast() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(4, 3\) and \(4, 2\)"):
        VICRegLoss()(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        VICRegLoss()(torch.zeros(1, 3))
    layer = torch.nn.Linear(8, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        x = layer(torch.randn(16, 8))
        out = VICRegLoss()(x, x.detach() + 1)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())


def _loop_barlow(x: np.ndarray, y: np.ndarray, lam: float, eps: float) -> tuple[float, float]:
    n, d = x.shape

    def standardize(z: np.ndarray) -> list[list[float]]:
        out = [[0.0] * d for _ in range(n)]
        for k in range(d):
            mean = sum(z[i, k] for i in range(n)) / n
            var = sum((z[i, k] - mean) ** 2 for i in range(n)) / n
            for i in range(n):
                out[i][k] = (z[i, k] - mean) / (var + eps) ** 0.5
        return out

    a, b = standardize(x), standardize(y)
    c = [[sum(a[i][p] * b[i][q] for i in range(n)) / n for q in range(d)] for p in range(d)]
    on = sum((1 - c[k][k]) ** 2 for k in range(d))
    off = lam * sum(c[p][q] ** 2 for p in range(d) for q in range(d) if p != q)
    return on, off


def test_barlow_matches_loops_and_batchnorm_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = 0.5 * x + torch.randn(7, 3, generator=gen, dtype=torch.float64)
    out = BarlowTwinsLoss(lambda_offdiag=0.1)(x, y)
    on, off = _loop_barlow(x.numpy(), y.numpy(), 0.1, 1e-5)
    assert out["on_diagonal"].item() == pytest.approx(on, rel=1e-5)
    assert out["off_diagonal"].item() == pytest.approx(off, rel=1e-5)
    assert out["loss"].item() == pytest.approx(on + off, rel=1e-5)
    # reference: BatchNorm1d(affine=False) in training mode, c = bn(x).T bn(y) / N
    bn = torch.nn.BatchNorm1d(3, affine=False).double().train()
    c = bn(x).T @ bn(y) / 7
    ref = (torch.diagonal(c) - 1).pow(2).sum() + 0.1 * (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_barlow_identical_inputs_and_shapes() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 8, 6, generator=gen)
    same = BarlowTwinsLoss()(x, x.clone())
    assert same["on_diagonal"].item() < 1e-4
    assert BarlowTwinsLoss()(x, torch.randn(4, 8, 6, generator=gen))["on_diagonal"].item() > 1.0
    assert BarlowTwinsLoss()(x)["loss"].item() == pytest.approx(same["loss"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        BarlowTwinsLoss()(x, x[:, :4])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = BarlowTwinsLoss()(torch.nn.Linear(6, 6)(x), x)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())


def test_regularizer_gradients_skip_detached_targets() -> None:
    x = torch.randn(16, 4, requires_grad=True)
    y = torch.randn(16, 4, requires_grad=True)
    for loss in (VICRegLoss(), BarlowTwinsLoss()):
        x.grad = None
        loss(x, y.detach())["loss"].backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert y.grad is None
