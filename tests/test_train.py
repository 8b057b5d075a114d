import json
import os
import pickle

import pytest
import torch

from hjepa.config import load_config
from hjepa.models import HJEPA
from hjepa.train import CheckpointError, NonFiniteLossError, load_checkpoint, load_model, train
from hjepa.train.checkpoint import atomic_save, save_checkpoint


def debug_cfg(out, *extra):
    return load_config("digits-debug", [f"train.out_dir={out}", *extra])


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_config_checkpoints_and_metrics(tmp_path):
    result = train(debug_cfg(tmp_path, "train.keep_last=1"))
    assert (tmp_path / "config.yaml").is_file()
    assert load_config(tmp_path / "config.yaml") == debug_cfg(tmp_path, "train.keep_last=1")
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["last.pt", "step_00000006.pt"]  # step 3 pruned by keep_last=1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    for key in ("loss", "loss_h0", "loss_h1", "lr", "momentum", "images_per_s", "data_time", "std_min",
                "effective_rank", "participation_ratio"):
        assert key in records[-1], key
    assert torch.isfinite(torch.tensor(result.final_loss))


def test_resume_continues_the_same_loss_curve_bit_identically(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(debug_cfg(full, "train.log_every=1"))
    train(debug_cfg(part, "train.log_every=1"), stop_at=3)  # interrupted after step 3 (checkpoint written)
    resumed = train(debug_cfg(part, "train.log_every=1"), resume=True)
    assert losses(part) == losses(full)  # exact float equality: bit-identical on CPU
    reference = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(debug_cfg(tmp_path), resume=True)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = HJEPA.forward

    def poisoned(self, images, masks, step=0):
        out = original(self, images, masks, step)
        if step >= 4:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(HJEPA, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 4.*loss"):
        train(debug_cfg(tmp_path))
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_loading_refuses_corrupt_unsafe_and_foreign_files(tmp_path, tiny_checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "hjepa-checkpoint-v1", "payload": Evil()}, unsafe, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="not safe"):
        load_checkpoint(unsafe)

    other = tmp_path / "other.pt"
    atomic_save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an hjepa checkpoint"):
        load_checkpoint(other)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_from_another_architecture_is_refused_naming_the_mismatch(tmp_path, tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    state["config"]["model"]["embed_dim"] = 48
    changed = tmp_path / "changed.pt"
    atomic_save(state, changed)
    with pytest.raises(CheckpointError, match="another architecture.*shape mismatch"):
        load_model(changed)


def test_load_model_round_trips_weights(tiny_checkpoint):
    model, cfg, state = load_model(tiny_checkpoint)
    assert cfg.name == "digits-debug" and state["step"] == 6
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key])


def test_atomic_save_leaves_no_partial_file_on_failure(tmp_path):
    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    target = tmp_path / "x.pt"
    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"bad": Unsaveable()}, target)
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_keeps_last_k(tmp_path):
    cfg = debug_cfg(tmp_path)
    model = torch.nn.Linear(2, 2)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, None, cfg, keep_last=2, periodic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_00000003.pt", "step_00000004.pt"]


def test_garbage_file_is_reported_as_corrupt_not_unsafe(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)


def test_compiled_model_serves_batches_of_every_shape_without_recompiling():
    # Context length and distinct-query counts change every batch; one dynamic graph must serve them all (with duck
    # shaping, sizes equal by chance in the first batch were tied together and later batches recompiled).
    from hjepa.models import build_model
    from hjepa.train.loop import compile_runner
    from tests.test_models import make_masks, small_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = small_config(num_levels=2, predictor_depth=1)
    cfg.masks.num_targets = [3, 2]
    model = build_model(cfg)
    runner = compile_runner(model, backend="eager")  # dynamo's guards are what recompiles; no C++ compiler needed
    images = torch.randn(4, 3, 32, 32)
    masks = make_masks(cfg, model, batch=4, seed=0).with_queries()
    torch.testing.assert_close(runner(images, masks)["loss"], model(images, masks)["loss"])
    shapes = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(1, 6):
            masks = make_masks(cfg, model, batch=4, seed=seed).with_queries()
            shapes.add((masks.num_context, masks.queries.num_queries, masks.queries.rows.numel()))
            torch.testing.assert_close(runner(images, masks)["loss"], model(images, masks)["loss"])
    assert len(shapes) > 2  # the batches really differed




def test_optimizer_is_fused_on_the_cpu_and_steps_like_the_per_parameter_loop():
    from hjepa.models import build_model
    from hjepa.train.optim import build_optimizer, parameter_groups, set_hyperparameters

    cfg = load_config("digits-debug")
    torch.manual_seed(0)
    fused_model, loop_model = build_model(cfg), build_model(cfg)
    loop_model.load_state_dict(fused_model.state_dict())
    initial = [p.detach().clone() for p in fused_model.parameters()]
    fused = build_optimizer(fused_model, cfg.optim, torch.device("cpu"))
    assert fused.defaults["fused"], "this torch has a fused CPU AdamW kernel; the optimizer should use it"
    loop = torch.optim.AdamW(parameter_groups(loop_model), lr=cfg.optim.lr, betas=cfg.optim.betas,
                             weight_decay=cfg.optim.weight_decay, foreach=False)
    for optimizer in (fused, loop):
        set_hyperparameters(optimizer, 1e-3, 0.05)
    for step in range(3):
        for model in (fused_model, loop_model):
            torch.manual_seed(step)
            for param in model.parameters():
                param.grad = torch.randn_like(param)
        fused.step()
        loop.step()
    pairs = [pair for pair in zip(fused_model.named_parameters(), loop_model.parameters(), initial, strict=True)
             if pair[0][1].requires_grad]  # the EMA target is not the optimizer's
    assert pairs and all(not torch.equal(a, start) for (_, a), _, start in pairs), "every trained weight should move"
    for (name, a), b, _ in pairs:
        assert torch.allclose(a, b, atol=1e-6), name
