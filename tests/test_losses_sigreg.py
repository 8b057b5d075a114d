"""SIGReg: numpy trapezoid computation, Gaussian vs collapsed inputs, seeded directions, two-rank all-reduce."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hjepa.losses import SIGRegLoss


def _numpy_epps_pulley(z: np.ndarray, directions: np.ndarray, num_points: int, t_max: float) -> np.ndarray:
    """EP per direction: N * 2 * trapezoid over [0, t_max] of |ecf - exp(-t^2/2)|^2 exp(-t^2/2), float64."""
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    t = np.linspace(0.0, t_max, num_points)
    stats = []
    for m in range(directions.shape[1]):
        h = z @ directions[:, m]
        integrand = []
        for tj in t:
            real = np.mean(np.cos(tj * h))
            imag = np.mean(np.sin(tj * h))
            integrand.append(((real - np.exp(-(tj**2) / 2)) ** 2 + imag**2) * np.exp(-(tj**2) / 2))
        integrand = np.array(integrand)
        trapezoid = np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t))
        stats.append(len(h) * 2 * trapezoid)
    return np.array(stats)


def test_matches_numpy_trapezoid_with_given_directions() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 5)) * 1.3 + 0.2
    directions = rng.normal(size=(5, 6)) * 3.0  # normalised inside, as in the numpy version
    out = SIGRegLoss(num_slices=6, num_points=9, t_max=2.5)(
        torch.from_numpy(z), directions=torch.from_numpy(directions)
    )
    expected = _numpy_epps_pulley(z, directions, 9, 2.5)
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(expected.mean(), rel=1e-4)
    assert out["statistic_max"].item() == pytest.approx(expected.max(), rel=1e-4)


def test_gaussian_is_small_and_collapse_is_large() -> None:
    gen = torch.Generator().manual_seed(0)
    loss = SIGRegLoss(num_slices=64)
    gaussian = loss(torch.randn(2000, 16, generator=gen))["loss"].item()
    constant = loss(torch.full((2000, 16), 0.5))["loss"].item()
    rank_one = loss(torch.randn(2000, 1, generator=gen) * torch.randn(1, 16, generator=gen))["loss"].item()
    shrunk = loss(0.1 * torch.randn(2000, 16, generator=gen))["loss"].item()
    assert 0.5 < gaussian < 2.0  # the null expectation is 2 * int_0^3 (1 - e^{-t^2}) e^{-t^2/2} dt ~ 1.05
    assert constant > 100 * gaussian
    assert rank_one > 20 * gaussian
    assert shrunk > 100 * gaussian


def test_directions_are_seeded_by_step() -> None:
    loss = SIGRegLoss(num_slices=8)
    a0, again, a1 = loss.directions_for_step(5, 0), loss.directions_for_step(5, 0), loss.directions_for_step(5, 1)
    assert a0.shape == (5, 8)
    assert torch.allclose(a0.norm(dim=0), torch.ones(8))
    assert torch.equal(a0, again) and not torch.allclose(a0, a1)
    assert not torch.allclose(a0, SIGRegLoss(num_slices=8, seed=1).directions_for_step(5, 0))
    z = torch.randn(50, 5)
    given = loss(z, directions=loss.directions_for_step(5, 3))["loss"].item()
    assert loss(z, step=3)["loss"].item() == pytest.approx(given, rel=1e-6)
    assert loss(z, step=3)["loss"].item() != loss(z, step=4)["loss"].item()
    assert loss(z.view(5, 10, 5), step=3)["loss"].item() == pytest.approx(loss(z, step=3)["loss"].item())


def test_gradients_and_autocast() -> None:
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(64, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = SIGRegLoss(num_slices=16)(layer(x), step=2)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
    # a zero embedding has no direction problem: finite loss and gradient
    zero = torch.zeros(10, 4, requires_grad=True)
    SIGRegLoss(num_slices=4)(zero)["loss"].backward()
    assert torch.isfinite(zero.grad).all()


def test_errors() -> None:
    with pytest.raises(ValueError, match="num_points"):
        SIGRegLoss(num_points=1)
    with pytest.raises(ValueError, match="num_slices"):
        SIGRegLoss(num_slices=0)
    with pytest.raises(ValueError, match=r"directions must have shape \[4, M\], got \(3, 2\)"):
        SIGRegLoss()(torch.zeros(5, 4), directions=torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        SIGRegLoss()(torch.zeros(5))


def _two_rank_worker(rank: int, init_file: str, z_full: torch.Tensor, weight: torch.Tensor) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        loss = SIGRegLoss(num_slices=8)
        # unequal shards: 30 rows on rank 0, 50 on rank 1
        shard = z_full[:30] if rank == 0 else z_full[30:]
        w = weight.clone().requires_grad_(True)
        value = loss(shard @ w, step=7)["loss"]
        value.backward()
        grad = w.grad.clone()
        torch.distributed.all_reduce(grad)
        grad /= 2  # what DDP does to the per-rank gradients
        w_full = weight.clone().requires_grad_(True)
        torch.distributed.destroy_process_group()  # the reference runs as one process
        full = loss(z_full @ w_full, step=7)["loss"]
        full.backward()
        assert value.item() == pytest.approx(full.item(), rel=1e-5)
        assert torch.allclose(grad, w_full.grad, rtol=1e-4, atol=1e-6)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_union(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    z_full, weight = torch.randn(80, 4, generator=gen), torch.randn(4, 4, generator=gen)
    torch.multiprocessing.spawn(_two_rank_worker, args=(str(tmp_path / "init"), z_full, weight), nprocs=2, join=True)
