import pytest
import torch

from hjepa.config import load_config
from hjepa.models import HJEPA, ViTEncoder, ema_update, momentum_schedule, pool_tokens
from hjepa.models.hamiltonian import Potential, hamiltonian_energy, leapfrog
from hjepa.train.model import build_training_model


def small_config(**model_overrides):
    sets = [
        "model.encoder=custom",
        "model.embed_dim=32",
        "model.depth=2",
        "model.num_heads=2",
        "model.img_size=32",
        "model.patch_size=4",
        "model.predictor_embed_dim=32",
        "model.predictor_depth=1",
        "model.predictor_num_heads=2",
        "masks.min_keep=4",
    ]
    sets += [f"model.{k}={v}" for k, v in model_overrides.items()]
    return load_config(None, sets)


def make_masks(cfg, model, batch=3, seed=0):
    from hjepa.masks import build_mask_generator

    gen = build_mask_generator(cfg.masks, model.grid, model.num_levels)
    return gen(batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_levels", [1, 2, 3, 4])
@pytest.mark.parametrize("predictor", ["transformer", "cross", "hamiltonian"])
def test_forward_shapes_every_level_and_predictor(num_levels, predictor):
    torch.manual_seed(0)
    size = 64 if num_levels == 4 else 32  # four levels need a grid of at least 2x2 cells of 8x8 patches
    cfg = small_config(num_levels=num_levels, predictor=predictor, img_size=size)
    cfg.masks.num_targets = [2]
    cfg.masks.target_scale = (0.1, 0.15)
    model = build_training_model(cfg)
    masks = make_masks(cfg, model)
    out = model(torch.randn(3, 3, size, size), masks)
    assert torch.isfinite(out["loss"])
    assert {f"loss_h{k}" for k in range(num_levels)} <= set(out)
    assert out["target_pooled"].shape == (3, 32)
    for level in range(num_levels):
        tokens, pooled = model.extract_features(torch.randn(2, 3, size, size), level)
        side = (size // 4) >> level
        assert tokens.shape == (2, side * side, 32) and pooled.shape == (2, 32)
    with pytest.raises(ValueError, match="level"):
        model.extract_features(torch.randn(1, 3, size, size), num_levels)


def test_gathered_tokens_equal_encoder_on_selected_tokens():
    torch.manual_seed(0)
    cfg = small_config()
    encoder = ViTEncoder(cfg.model).eval()
    images = torch.randn(2, 3, 32, 32)
    idx = torch.tensor([[0, 5, 9, 63], [1, 2, 40, 62]])
    gathered = encoder(images, idx)
    # Reference: embed, add positions, select the tokens by hand, then run the blocks on just those tokens.
    x = encoder.vit.patch_embed(images) + encoder.pos_embed
    manual = torch.stack([x[b, idx[b]] for b in range(2)])
    manual = encoder.vit.norm(encoder.vit.blocks(manual))
    torch.testing.assert_close(gathered, manual)
    # And the selected tokens really are processed alone: changing a dropped patch changes nothing.
    images2 = images.clone()
    images2[0, :, 4:8, 4:8] += 5.0  # patch 9 (row 1, col 1), kept for sample 0
    images3 = images.clone()
    images3[0, :, 4:8, 8:12] += 5.0  # patch 10, not selected for sample 0
    torch.testing.assert_close(encoder(images3, idx)[0], gathered[0])
    assert not torch.allclose(encoder(images2, idx)[0], gathered[0])


def test_cpu_bf16_training_uses_explicit_attention_with_the_same_result():
    torch.manual_seed(0)
    encoder = ViTEncoder(small_config().model)
    attention = [m for m in encoder.modules() if hasattr(m, "fused_attn")]
    assert attention and all(m.fused_attn for m in attention)  # timm's default here
    images = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explicit = encoder(images)
        assert not any(m.fused_attn for m in attention)
        with torch.no_grad():
            encoder(images)  # inference keeps the fused kernel
        assert all(m.fused_attn for m in attention)
    fp32 = encoder(images)
    assert all(m.fused_attn for m in attention)  # fp32 training keeps it too
    for module in attention:
        module.fused_attn = True
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        fused = encoder(images)
    torch.testing.assert_close(explicit.float(), fused.float(), atol=0.05, rtol=0.05)
    torch.testing.assert_close(explicit.float(), fp32, atol=0.1, rtol=0.1)


def test_ema_moves_target_by_the_scheduled_amount():
    torch.manual_seed(0)
    cfg = small_config()
    model = build_training_model(cfg)
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    online = [p.clone() for p in model.context_encoder.parameters()]
    model.set_momentum_schedule(torch.tensor([0.9, 0.99]))
    assert model.update_target(0) == pytest.approx(0.9)
    for b, o, after in zip(before, online, model.target_encoder.parameters(), strict=True):
        torch.testing.assert_close(after, 0.9 * b + 0.1 * o)


def test_ema_target_heads_follow_context_heads_and_layernorm_targets_have_no_parameters():
    torch.manual_seed(0)
    model = build_training_model(small_config(target_heads="ema", head_dim=16))
    with torch.no_grad():
        model.context_heads[0].proj.weight.add_(1.0)
    before = model.target_heads[0].proj.weight.clone()
    model.set_momentum_schedule(torch.tensor([0.5]))
    model.update_target(0)
    expected = 0.5 * before + 0.5 * model.context_heads[0].proj.weight
    torch.testing.assert_close(model.target_heads[0].proj.weight, expected)
    plain = build_training_model(small_config())
    assert sum(p.numel() for p in plain.target_heads.parameters()) == 0
    tokens, _ = plain.extract_features(torch.randn(2, 3, 32, 32), 1)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)  # layer-normed
    with pytest.raises(ValueError, match="head_dim"):
        build_training_model(small_config(head_dim=16))
    with pytest.raises(ValueError, match="target_heads"):
        build_training_model(small_config(target_heads="shared"))


def test_ema_copies_non_float_buffers():
    src, dst = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    src.num_batches_tracked.fill_(7)
    ema_update([dst], [src], 0.5)
    assert int(dst.num_batches_tracked) == 7


def test_momentum_schedules():
    cos = momentum_schedule(0.996, 1.0, 100, "cosine")
    lin = momentum_schedule(0.996, 1.0, 100, "linear")
    for s in (cos, lin):
        assert s[0] == pytest.approx(0.996) and s[-1] == pytest.approx(1.0)
        assert torch.all(s[1:] >= s[:-1])
    assert lin[50] == pytest.approx(0.998) and cos[50] == pytest.approx(0.998)
    assert cos[10] < lin[10]
    with pytest.raises(ValueError, match="ema_schedule"):
        momentum_schedule(0.9, 1.0, 10, "step")


@pytest.mark.parametrize("target_heads", ["layernorm", "ema"])
@pytest.mark.parametrize("predictor", ["transformer", "cross", "hamiltonian"])
def test_no_gradient_reaches_the_target_side(predictor, target_heads):
    torch.manual_seed(0)
    cfg = small_config(predictor=predictor, num_levels=2, target_heads=target_heads)
    model = build_training_model(cfg)
    out = model(torch.randn(2, 3, 32, 32), make_masks(cfg, model, batch=2))
    out["loss"].backward()
    for name, param in model.named_parameters():
        if name.startswith(("target_encoder", "target_heads")):
            assert not param.requires_grad and param.grad is None, name
    grads = [p.grad for n, p in model.named_parameters() if n.startswith(("context_encoder", "predictor"))]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_hamiltonian_leapfrog_conserves_energy():
    torch.manual_seed(0)
    potential = Potential(dim=8, hidden_dim=16, base_coeff=1.0, residual_scale=0.1).double()
    q0, p0 = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    e0 = hamiltonian_energy(q0, p0, potential)
    with torch.no_grad():
        q, p = leapfrog(q0, p0, potential, dt=0.01, steps=200)
        drift_small = (hamiltonian_energy(q, p, potential) - e0).abs().max()
        q, p = leapfrog(q0, p0, potential, dt=0.1, steps=20)
        drift_large = (hamiltonian_energy(q, p, potential) - e0).abs().max()
        q, p = leapfrog(q0, p0, potential, dt=0.01, steps=200, damping=1.0)
        damped = hamiltonian_energy(q, p, potential)
    assert drift_small < 1e-3 * e0.abs().max()
    assert drift_small < drift_large  # error shrinks with dt (second-order integrator)
    assert torch.all(damped < e0)  # damping dissipates energy


def test_level_pooling_on_a_hand_made_grid():
    grid = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)  # 4x4 grid, value = raster index
    level1 = pool_tokens(grid, (4, 4), 1).flatten()
    assert level1.tolist() == [2.5, 4.5, 10.5, 12.5]
    assert pool_tokens(grid, (4, 4), 2).flatten().tolist() == [7.5]
    assert torch.equal(pool_tokens(grid, (4, 4), 0), grid)


def test_grid_not_divisible_by_levels_is_an_error_naming_sizes():
    cfg = small_config(num_levels=4, img_size=24)  # 6x6 grid, needs divisibility by 8
    with pytest.raises(ValueError, match="6x6.*8"):
        build_training_model(cfg)


def test_parameter_summary():
    model = build_training_model(small_config())
    summary = model.parameter_summary()
    assert summary["context_encoder"] == summary["target_encoder"] > 0
    assert summary["trainable"] == sum(summary[k] for k in ("context_encoder", "predictor", "context_heads"))
    assert summary["target_heads"] == 0  # parameter-free layer-normed targets by default
    assert isinstance(model, HJEPA)


def test_joint_and_per_block_prediction_agree_with_one_block():
    # With one target block per image, both layouts build the very same sequence.
    torch.manual_seed(0)
    cfg = small_config(num_levels=1)
    cfg.masks.num_targets = [1]
    model = build_training_model(cfg).eval()
    masks = make_masks(cfg, model, batch=2)
    images = torch.randn(2, 3, 32, 32)
    joint = model(images, masks)["loss"]
    model.predictor_batching = "per_block"
    torch.testing.assert_close(model(images, masks)["loss"], joint)
    # With several blocks they differ (blocks share a sequence in joint mode) but both train.
    cfg.masks.num_targets = [3]
    masks = make_masks(cfg, model, batch=2)
    assert torch.isfinite(model(images, masks)["loss"])
    with pytest.raises(ValueError, match="predictor_batching"):
        build_training_model(small_config(predictor_batching="both"))
