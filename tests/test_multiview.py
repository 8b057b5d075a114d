"""The multi-view objective: views, the loss against a hand computation, the model, training and resume."""

from __future__ import annotations

import math

import pytest
import torch

from hjepa.config import HamiltonianConfig, load_config
from hjepa.data import MultiViewAugment, batch_generator
from hjepa.losses import MultiViewLoss, SIGRegLoss, VICRegLoss
from hjepa.models.pos_embed import sincos_2d
from hjepa.models.view_predictor import VIEW_PREDICTORS
from hjepa.train.model import build_training_model

MULTIVIEW = ["model.objective=multiview", "loss.regularizer=sigreg", "loss.regularizer_weight=[0.1]",
             "data.num_local_views=2", "data.local_img_size=8"]


def _images(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_views_have_the_configured_shapes_and_differ():
    augment = MultiViewAugment(32, num_global=2, num_local=3, local_img_size=16, crop_scale=(0.3, 1.0))
    views = augment(_images(), batch_generator(0, 5))
    assert views.globals_.shape == (2, 6, 3, 32, 32)
    assert views.locals_ is not None and views.locals_.shape == (3, 6, 3, 16, 16)
    assert (views.num_global, views.num_local, views.batch_size) == (2, 3, 6)
    assert not torch.allclose(views.globals_[0], views.globals_[1])  # each view draws its own crops
    assert not torch.allclose(views.locals_[0], views.locals_[1])


def test_views_are_a_function_of_seed_and_step():
    augment = MultiViewAugment(32, num_global=2, num_local=2, local_img_size=16)
    first = augment(_images(), batch_generator(3, 7))
    again = augment(_images(), batch_generator(3, 7))
    other = augment(_images(), batch_generator(3, 8))
    assert torch.equal(first.globals_, again.globals_) and torch.equal(first.locals_, again.locals_)
    assert not torch.equal(first.globals_, other.globals_)


def test_no_local_views_gives_none():
    views = MultiViewAugment(16, num_global=3, num_local=0)(_images(), batch_generator(0, 0))
    assert views.locals_ is None and views.num_local == 0 and views.globals_.shape[0] == 3


def test_loss_matches_a_hand_computation_with_vicreg():
    torch.manual_seed(0)
    z = torch.randn(4, 8, 5)  # 4 views (2 global), batch 8, width 5
    p = torch.randn(4, 8, 5)
    lam = 0.3
    reg = VICRegLoss()
    out = MultiViewLoss(reg, [lam], [2.0])([z], [p], num_global=2)
    center = (z[0] + z[1]) / 2
    prediction = sum(((p[v] - center) ** 2).mean() for v in range(4)) / 4
    regularizer = sum(reg(z[v])["loss"] for v in range(4)) / 4  # VICReg's variance + covariance of each view
    expected = 2.0 * ((1 - lam) * prediction + lam * regularizer)
    assert math.isclose(float(out["loss"]), float(expected), rel_tol=1e-5)
    assert math.isclose(float(out["pred_h0"]), float(prediction), rel_tol=1e-5)
    assert math.isclose(float(out["loss_prediction"] + out["loss_regularizer"]), float(expected), rel_tol=1e-5)
    assert float(out["reg_h0_invariance"]) == 0.0  # the prediction term is the only invariance term


def test_loss_barlow_gets_the_detached_centre():
    from hjepa.losses import BarlowTwinsLoss

    z = torch.randn(2, 8, 4)
    barlow = BarlowTwinsLoss()
    out = MultiViewLoss(barlow, [0.5], [1.0])([z], [z], num_global=2)
    center = z.mean(0)
    expected = (barlow(z[0], center)["loss"] + barlow(z[1], center)["loss"]) / 2
    assert math.isclose(float(out["reg_h0"]), float(expected), rel_tol=1e-5)


def test_loss_sigreg_is_unary_and_gradient_reaches_the_centre():
    z = torch.randn(3, 16, 4, requires_grad=True)
    sigreg = SIGRegLoss(num_slices=8)
    out = MultiViewLoss(sigreg, [0.5], [1.0])([z], [z], num_global=2, step=3)
    expected_reg = sum(sigreg(z[v], step=3)["loss"] for v in range(3)) / 3
    assert math.isclose(float(out["reg_h0"]), float(expected_reg.detach()), rel_tol=1e-5)
    out["loss"].backward()
    # LeJEPA lets the gradient flow into the centre of the global views, so the global views' rows move too.
    assert z.grad is not None and z.grad[:2].abs().sum() > 0


def test_loss_refuses_lambda_outside_0_1():
    with pytest.raises(ValueError, match="regularizer_weight"):
        MultiViewLoss(SIGRegLoss(), [0.0], [1.0])


@pytest.mark.parametrize("name", VIEW_PREDICTORS.names())
def test_view_predictors_keep_shape(name):
    hamiltonian = HamiltonianConfig(hidden_dim=8, match="qp")
    predictor = VIEW_PREDICTORS.build_from(name, dim=6, hidden_dim=8, hamiltonian=hamiltonian)
    z = torch.randn(5, 6)
    out = predictor(z)
    assert out.shape == z.shape and torch.isfinite(out).all()
    if name in ("none", "mlp"):  # the MLP starts as the identity
        assert torch.allclose(out, z)


def test_local_positions_span_the_full_grid():
    full = sincos_2d(16, (4, 4))
    assert torch.equal(sincos_2d(16, (4, 4), span=(4, 4)), full)
    half = sincos_2d(16, (2, 2), span=(4, 4))  # a 2x2 view of the whole image: cell centres at 0.5 and 2.5
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 4)
    row, col = torch.tensor(2.5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    expected = torch.cat([(row * omega).sin(), (row * omega).cos(), (col * omega).sin(), (col * omega).cos()])
    assert torch.allclose(half[2], expected.float(), atol=1e-6)  # raster index 2 = row 1, column 0


def test_model_trains_and_extracts_the_exported_feature():
    cfg = load_config("digits-debug", MULTIVIEW + ["model.num_levels=2"])
    model = build_training_model(cfg)
    augment = MultiViewAugment(16, 2, 2, 8)
    views = augment(_images(8), batch_generator(0, 0))
    out = model(views, None, step=0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.context_encoder.vit.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in model.target_encoder.parameters())
    model.set_momentum_schedule(torch.zeros(10, dtype=torch.float64))
    model.update_target(0)  # momentum 0: the target is the trained encoder
    model.eval()
    tokens, pooled = model.extract_features(views.globals_[0], level=1)
    # The training embedding of level 1 is exactly the exported level-1 pooled feature.
    assert torch.allclose(pooled, model.level_embeddings(views.globals_[0])[1], atol=1e-5)
    assert tokens.shape == (8, 4, 32)  # level 1 of a 4x4 grid: 2x2 cells


def test_multiview_requires_a_regularizer():
    from hjepa.config import ConfigError

    cfg = load_config("digits-debug", ["model.objective=multiview"])
    with pytest.raises(ConfigError, match="needs loss.regularizer"):
        build_training_model(cfg)


def test_training_resumes_exactly(tmp_path):
    from hjepa.train import train

    whole = load_config("digits-debug", MULTIVIEW + [f"train.out_dir={tmp_path / 'a'}"])
    parts = load_config("digits-debug", MULTIVIEW + [f"train.out_dir={tmp_path / 'b'}"])
    full = train(whole)
    train(parts, stop_at=3)
    resumed = train(parts, resume=True)
    assert resumed.final_loss == full.final_loss
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_validation_split_is_fixed_disjoint_and_complete():
    from hjepa.data.splits import validation_split

    bank, val = validation_split(600)
    again_bank, again_val = validation_split(600)
    assert torch.equal(bank, again_bank) and torch.equal(val, again_val)
    assert len(val) == 100 and len(bank) == 500
    assert set(bank.tolist()).isdisjoint(val.tolist()) and len(set(bank.tolist()) | set(val.tolist())) == 600


def test_monitor_on_the_validation_split_never_reads_test(monkeypatch):
    import hjepa.train.knn_monitor as monitor_module
    from hjepa.train.knn_monitor import KnnMonitor

    real = monitor_module.build_dataset
    splits_read = []

    def spy(name, split, *args, **kwargs):
        splits_read.append(split)
        return real(name, split, *args, **kwargs)

    monkeypatch.setattr(monitor_module, "build_dataset", spy)
    cfg = load_config("digits-debug", ["train.knn_split=val"])
    monitor = KnnMonitor(cfg, torch.device("cpu"), train_samples=None, test_samples=None)
    assert splits_read == ["train"]
    bank, val = monitor.sizes
    assert val == round(1437 / 6) and bank == 1437 - val
    result = monitor(build_training_model(cfg))
    assert 0 <= result[20]["top1"] <= 100


def test_merge_heads_train_follow_into_the_target_and_export_with_parity(tmp_path):
    """``model.level_heads=merge``: the level-1 head merges 2x2 windows, is trained, the exported target head is the
    trained one (momentum 0), and ONNX gives what the checkpoint gives at every level."""
    from hjepa.data import EvalTransform, build_dataset, dataset_stats
    from hjepa.export import export
    from hjepa.export.verify import compare, cpu_session
    from hjepa.models.hierarchy import MergeHead
    from hjepa.train import train
    from hjepa.train.checkpoint import load_model

    cfg = load_config("digits-debug", MULTIVIEW + [
        "model.num_levels=2", "model.level_heads=merge", "optim.ema_start=0.0", "optim.ema_end=0.0",
        "train.steps=3", f"train.out_dir={tmp_path / 'run'}", "train.progress=false"])
    result = train(cfg)
    model = result.model
    assert isinstance(model.context_heads[1], MergeHead) and isinstance(model.target_heads[1], MergeHead)
    start = MergeHead(32, 1, 2)
    assert not torch.allclose(model.context_heads[1].merge.weight, start.merge.weight)  # trained
    for trained, exported in zip(model.context_heads.state_dict().values(), model.target_heads.state_dict().values(),
                                 strict=True):
        assert torch.equal(trained, exported)
    loaded = load_model(tmp_path / "run" / "checkpoints" / "last.pt")[0]
    out = tmp_path / "export"
    export(tmp_path / "run" / "checkpoints" / "last.pt", "all", out)
    images = EvalTransform(16, *dataset_stats("digits"))(build_dataset("digits", "test").tensors()[0][:3])
    pooled = {}
    for level in (0, 1):
        tokens, pooled[level] = loaded.extract_features(images, level)
        got = cpu_session(out / f"level{level}.onnx").run(["tokens", "pooled"], {"images": images.numpy()})
        figures = compare([tokens.numpy(), pooled[level].numpy()], got)
        assert figures["tokens"]["max_abs_err"] < 1e-4 and figures["pooled"]["min_cosine"] > 0.9999
    # A merged level is not the mean of the level below: the pooled features of the two levels differ.
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-2)


def test_merge_heads_need_the_multiview_objective():
    from hjepa.config import ConfigError

    with pytest.raises(ConfigError, match="level_heads=merge needs"):
        load_config("digits-debug", ["model.level_heads=merge"])


def test_merge_heads_run_the_encoders_attention_kernel():
    """A merge head's block picks its attention kernel as the encoder's blocks do (explicit for CPU bf16 training)."""
    from hjepa.models.hierarchy import MergeHead

    head = MergeHead(32, 1, 2)
    tokens = torch.randn(2, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        head(tokens, (4, 4))
    assert head.block.attn.fused_attn is False
    with torch.no_grad():
        out = head(tokens, (4, 4))
    assert head.block.attn.fused_attn == head._fused_default[0] and out.shape == (2, 4, 32)
