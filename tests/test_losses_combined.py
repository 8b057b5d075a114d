"""CombinedLoss / HierarchicalCombinedLoss and build_loss from the config."""

from __future__ import annotations

import pytest
import torch

from hjepa.config import ConfigError, LossConfig
from hjepa.losses import (
    REGULARIZERS,
    BarlowTwinsLoss,
    CombinedLoss,
    HierarchicalCombinedLoss,
    HJEPALoss,
    SIGRegLoss,
    VICRegLoss,
    build_loss,
)
from hjepa.losses.factory import regularizer_names


def _levels(seed: int = 0, shapes: tuple[tuple[int, int, int], ...] = ((4, 6, 8), (4, 3, 8))) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(seed)
    preds = [torch.randn(*s, generator=gen, requires_grad=True) for s in shapes]
    targets = [torch.randn(*s, generator=gen, requires_grad=True) for s in shapes]
    return preds, targets


def test_no_regularizer_is_the_prediction_loss() -> None:
    preds, targets = _levels()
    out = CombinedLoss(HJEPALoss(), None, [1.0])(preds, targets)
    plain = HJEPALoss()(preds, targets)
    assert out["loss"].item() == pytest.approx(plain["loss"].item())
    assert out["loss_prediction"].item() == pytest.approx(plain["loss"].item())
    assert out["loss_regularizer"].item() == 0.0
    assert not any(key.startswith("reg_") for key in out)


def test_vicreg_terms_weights_and_repeat_of_last_weight() -> None:
    preds, targets = _levels(shapes=((4, 6, 8), (4, 3, 8), (4, 2, 8)))
    reg = VICRegLoss()
    out = CombinedLoss(HJEPALoss(), reg, [0.0, 0.5])(preds, targets)  # levels 1 and 2 use 0.5
    assert "reg_h0" not in out
    expected_reg = 0.0
    for level in (1, 2):
        direct = reg(preds[level], targets[level])
        assert out[f"reg_h{level}"].item() == pytest.approx(direct["loss"].item(), rel=1e-6)
        assert out[f"reg_h{level}_variance"].item() == pytest.approx(direct["variance"].item(), rel=1e-6)
        expected_reg += 0.5 * direct["loss"].item()
    assert out["loss_regularizer"].item() == pytest.approx(expected_reg, rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["loss_prediction"].item() + expected_reg, rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in preds)
    assert all(t.grad is None for t in targets)  # neither the prediction loss nor VICReg reaches the targets


def test_sigreg_receives_the_step() -> None:
    preds, targets = _levels()
    loss = CombinedLoss(HJEPALoss(), SIGRegLoss(num_slices=8), [1.0])
    at5 = loss(preds, targets, step=5)
    assert at5["reg_h1"].item() == pytest.approx(SIGRegLoss(num_slices=8)(preds[1], step=5)["loss"].item(), rel=1e-6)
    assert at5["reg_h0"].item() != loss(preds, targets, step=6)["reg_h0"].item()
    assert "reg_h0_statistic_max" in at5


def test_masks_restrict_the_regularized_positions_and_context_embeddings_override() -> None:
    preds, targets = _levels(shapes=((4, 6, 8),))
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, :3] = True
    reg = BarlowTwinsLoss()
    loss = CombinedLoss(HJEPALoss(), reg, [1.0])
    out = loss(preds, targets, [mask])
    selected = reg(preds[0][:, :3], targets[0][:, :3])["loss"]
    assert out["reg_h0"].item() == pytest.approx(selected.item(), rel=1e-5)
    assert out["reg_h0"].item() != pytest.approx(reg(preds[0], targets[0])["loss"].item(), rel=1e-3)
    gen = torch.Generator().manual_seed(9)
    context = torch.randn(4, 6, 8, generator=gen)
    given = loss(preds, targets, context_embeddings=[context])
    assert given["reg_h0"].item() == pytest.approx(reg(context, targets[0])["loss"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="1 levels of predictions but 2 of context_embeddings"):
        loss(preds, targets, context_embeddings=[context, context])


def test_hierarchical_one_regularizer_per_level() -> None:
    preds, targets = _levels(shapes=((4, 6, 8), (4, 3, 8), (4, 2, 8)))
    vicreg, sigreg = VICRegLoss(gamma=0.5), SIGRegLoss(num_slices=4)
    out = HierarchicalCombinedLoss(HJEPALoss(), [vicreg, None, sigreg], [1.0, 2.0, 3.0])(preds, targets, step=1)
    assert "reg_h1" not in out
    assert out["reg_h0"].item() == pytest.approx(vicreg(preds[0], targets[0])["loss"].item(), rel=1e-6)
    assert out["reg_h2"].item() == pytest.approx(sigreg(preds[2], step=1)["loss"].item(), rel=1e-6)
    expected = out["loss_prediction"] + out["reg_h0"] + 3.0 * out["reg_h2"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="level 1 has a positive regularizer weight but only 1 regularizers"):
        HierarchicalCombinedLoss(HJEPALoss(), [vicreg], [1.0])(preds[:2], targets[:2])


def test_autocast_outputs_are_float32() -> None:
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 6, 8)
    loss = build_loss(LossConfig(regularizer="vicreg", regularizer_weight=[0.1]), num_levels=1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = loss([layer(x)], [layer(x + 0.1)])
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("name", regularizer_names())
def test_build_loss_for_every_regularizer(name: str) -> None:
    cfg = LossConfig(prediction="huber", huber_delta=0.5, regularizer=name, regularizer_weight=[0.0, 0.2])
    loss = build_loss(cfg, num_levels=3)
    assert isinstance(loss, CombinedLoss)
    assert loss.prediction.loss_type == "huber" and loss.prediction.huber_delta == 0.5
    assert loss.prediction.level_weights == [1.0, 1.0, 1.0]
    assert loss.regularizer_weights == [0.0, 0.2, 0.2]
    expected_type = None if name == "none" else REGULARIZERS.get(name)
    assert (loss.regularizer is None) if expected_type is None else isinstance(loss.regularizer, expected_type)
    preds, targets = _levels(shapes=((4, 6, 8), (4, 3, 8), (4, 2, 8)))
    out = loss(preds, targets, step=2)
    assert torch.isfinite(out["loss"])
    assert ("reg_h2" in out) == (name != "none") and "reg_h0" not in out


def test_build_loss_passes_regularizer_settings() -> None:
    vicreg = build_loss(LossConfig(regularizer="vicreg", vicreg_sim=3.0, vicreg_gamma=0.7), 1).regularizer
    assert (vicreg.sim_coeff, vicreg.gamma, vicreg.std_coeff) == (3.0, 0.7, 25.0)
    barlow = build_loss(LossConfig(regularizer="barlow", barlow_lambda=0.01), 1).regularizer
    assert barlow.lambda_offdiag == 0.01
    sigreg = build_loss(LossConfig(regularizer="sigreg", sigreg_slices=32, sigreg_points=9, sigreg_t_max=2.0), 1)
    assert (sigreg.regularizer.num_slices, sigreg.regularizer.num_points, sigreg.regularizer.t_max) == (32, 9, 2.0)
    weighted = build_loss(LossConfig(prediction="mse", level_weights=[0.5, 2.0]), 2)
    assert weighted.prediction.level_weights == [0.5, 2.0] and weighted.prediction.loss_type == "mse"


def test_build_loss_errors_name_the_problem() -> None:
    with pytest.raises(
        ConfigError, match="unknown loss.regularizer 'simclr'; valid names: none, barlow, sigreg, vicreg"
    ):
        build_loss(LossConfig(regularizer="simclr"), 2)
    with pytest.raises(ConfigError, match="unknown loss.prediction 'l1'; valid names: huber, mse, smoothl1"):
        build_loss(LossConfig(prediction="l1"), 2)
    with pytest.raises(ConfigError, match="level_weights has 2 values but the model has 3 levels"):
        build_loss(LossConfig(level_weights=[1.0, 1.0]), 3)
    with pytest.raises(ConfigError, match="regularizer_weight has 3 values but there are only 2 levels"):
        build_loss(LossConfig(regularizer="vicreg", regularizer_weight=[1.0, 1.0, 1.0]), 2)
    with pytest.raises(ConfigError, match="regularizer_weight is empty"):
        build_loss(LossConfig(regularizer_weight=[]), 2)
    with pytest.raises(ConfigError, match="non-negative"):
        build_loss(LossConfig(regularizer_weight=[-1.0]), 2)
