"""HJEPALoss: hand-computed distances, masks, level weights, stop-gradient, float32 under autocast, errors."""

from __future__ import annotations

import math

import pytest
import torch

from hjepa.losses import HJEPALoss


def _elementwise(kind: str, p: float, t: float, delta: float) -> float:
    diff = abs(p - t)
    if kind == "mse":
        return diff**2
    quadratic = diff < delta
    huber = 0.5 * diff**2 if quadratic else delta * (diff - 0.5 * delta)
    return huber if kind == "huber" else huber / delta  # smooth L1 = Huber / delta


def _expected(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, delta: float) -> float:
    """Masked mean over positions of the mean over D, with explicit loops."""
    batch, num, dim = pred.shape
    total = weight_sum = 0.0
    for b in range(batch):
        for n in range(num):
            w = 1.0 if mask is None else float(mask[b, n])
            per_position = sum(
                _elementwise(kind, float(pred[b, n, k]), float(target[b, n, k]), delta) for k in range(dim)
            )
            total += w * per_position / dim
            weight_sum += w
    return total / weight_sum


@pytest.mark.parametrize("kind", ["mse", "smoothl1", "huber"])
@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_matches_hand_computation(kind: str, delta: float) -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    out = HJEPALoss(kind, huber_delta=delta)([pred], [target])
    assert out["loss"].dtype == torch.float32
    assert out["loss_h0"].item() == pytest.approx(_expected(kind, pred, target, None, delta), rel=1e-5)
    # smooth L1 and Huber really differ when delta != 1, so the test can tell them apart
    if delta != 1.0 and kind != "mse":
        other = "huber" if kind == "smoothl1" else "smoothl1"
        assert not math.isclose(out["loss"].item(), _expected(other, pred, target, None, delta), rel_tol=1e-3)


def test_masks_select_positions_and_float_masks_weight_them() -> None:
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 5, 3, generator=gen)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    loss = HJEPALoss("mse")
    value = loss([pred], [target], [mask])["loss"]
    assert value.item() == pytest.approx(_expected("mse", pred, target, mask, 1.0), rel=1e-5)
    # changing the unselected positions leaves the loss unchanged; changing a selected one does not
    changed = pred.clone()
    changed[~mask] += 100.0
    assert loss([changed], [target], [mask])["loss"].item() == pytest.approx(value.item(), rel=1e-6)
    changed[0, 0] += 1.0
    assert loss([changed], [target], [mask])["loss"].item() != pytest.approx(value.item(), rel=1e-3)
    weights = torch.rand(2, 5, generator=gen)
    weighted = loss([pred], [target], [weights])["loss"]
    assert weighted.item() == pytest.approx(_expected("mse", pred, target, weights, 1.0), rel=1e-5)
    # a [B, 1] mask broadcasts over N
    row = torch.tensor([[1.0], [0.0]])
    assert loss(pred, target, row)["loss"].item() == pytest.approx(loss(pred[:1], target[:1])["loss"].item(), rel=1e-6)


def test_empty_mask_gives_zero_with_finite_gradient() -> None:
    pred = torch.randn(2, 4, 3, requires_grad=True)
    out = HJEPALoss()([pred], [torch.randn(2, 4, 3)], [torch.zeros(2, 4, dtype=torch.bool)])
    out["loss"].backward()
    assert out["loss"].item() == 0.0
    assert torch.isfinite(pred.grad).all() and (pred.grad == 0).all()


def test_level_weights_and_keys() -> None:
    gen = torch.Generator().manual_seed(2)
    preds = [torch.randn(2, 8, 4, generator=gen), torch.randn(2, 2, 4, generator=gen)]
    targets = [torch.randn(2, 8, 4, generator=gen), torch.randn(2, 2, 4, generator=gen)]
    out = HJEPALoss("mse", level_weights=[0.25, 2.0])(preds, targets)
    per_level = [((p - t) ** 2).mean().item() for p, t in zip(preds, targets, strict=True)]
    assert out["loss_h0"].item() == pytest.approx(per_level[0], rel=1e-5)
    assert out["loss_h1"].item() == pytest.approx(per_level[1], rel=1e-5)
    assert out["loss_unweighted"].item() == pytest.approx(sum(per_level), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.25 * per_level[0] + 2.0 * per_level[1], rel=1e-5)


def test_normalize_is_scale_invariant() -> None:
    gen = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 3, 6, generator=gen), torch.randn(2, 3, 6, generator=gen)
    loss = HJEPALoss("mse", normalize=True)
    unit_p = pred / pred.norm(dim=-1, keepdim=True)
    unit_t = target / target.norm(dim=-1, keepdim=True)
    expected = ((unit_p - unit_t) ** 2).mean().item()
    assert loss(pred, target)["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert loss(7.0 * pred, 0.1 * target)["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert HJEPALoss("mse")(pred, target)["loss"].item() != pytest.approx(expected, rel=1e-2)


def test_reductions_sum_and_none() -> None:
    gen = torch.Generator().manual_seed(4)
    pred, target = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 4, generator=gen)
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    squared = (pred - target) ** 2
    summed = HJEPALoss("mse", reduction="sum")(pred, target, mask)
    assert summed["loss"].item() == pytest.approx(squared[mask].sum().item(), rel=1e-5)
    none = HJEPALoss("mse", reduction="none")(pred, target, mask)
    assert none["loss_h0"].shape == (2, 3)
    assert torch.allclose(none["loss_h0"], squared.mean(-1) * mask)
    assert none["loss"].item() == pytest.approx(squared[mask].mean().item(), rel=1e-5)


def test_gradients_reach_predictions_only() -> None:
    pred = torch.randn(2, 4, 3, requires_grad=True)
    target = torch.randn(2, 4, 3, requires_grad=True)
    HJEPALoss()([pred], [target])["loss"].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None


def test_bf16_autocast_gives_float32() -> None:
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 5, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        pred, target = layer(x), layer(x + 0.01)
        assert pred.dtype == torch.bfloat16
        out = HJEPALoss("smoothl1", normalize=True)([pred], [target])
    assert all(v.dtype == torch.float32 for v in out.values())
    assert torch.isfinite(out["loss"])
    # equal to the float32 computation on the same (upcast) bf16 values
    reference = HJEPALoss("smoothl1", normalize=True)([pred.float()], [target.float()])["loss"]
    assert out["loss"].item() == pytest.approx(reference.item(), rel=1e-6)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="huber, mse, smoothl1"):
        HJEPALoss("l1")
    with pytest.raises(ValueError, match="reduction"):
        HJEPALoss(reduction="max")
    loss = HJEPALoss()
    with pytest.raises(ValueError, match=r"level 0: predictions \(2, 3, 4\) and targets \(2, 3, 5\)"):
        loss([torch.zeros(2, 3, 4)], [torch.zeros(2, 3, 5)])
    with pytest.raises(ValueError, match="2 levels of predictions but 1 levels of targets"):
        loss([torch.zeros(1, 2, 3)] * 2, [torch.zeros(1, 2, 3)])
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4\) does not broadcast"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="level_weights has 3 values but there are 2 levels"):
        HJEPALoss(level_weights=[1, 1, 1])([torch.zeros(1, 2, 3)] * 2, [torch.zeros(1, 2, 3)] * 2)
