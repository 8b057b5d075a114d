import json
import os
import pickle

import pytest
import torch

from hjepa.config import ConfigError, load_config
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


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, nan_loss_from):
    nan_loss_from(4)
    with pytest.raises(NonFiniteLossError, match="step 4.*loss.*last good checkpoint .* is intact"):
        train(debug_cfg(tmp_path))
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been written yet"):  # before the first one
        train(debug_cfg(tmp_path / "early", "train.checkpoint_every=10"))
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
    from hjepa.train.loop import compile_runner
    from hjepa.train.model import build_training_model
    from tests.test_models import make_masks, small_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = small_config(num_levels=2, predictor_depth=1)
    cfg.masks.num_targets = [3, 2]
    model = build_training_model(cfg)
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
    from hjepa.train.model import build_training_model
    from hjepa.train.optim import build_optimizer, parameter_groups, set_hyperparameters

    cfg = load_config("digits-debug")
    torch.manual_seed(0)
    fused_model, loop_model = build_training_model(cfg), build_training_model(cfg)
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


def _resume_dir_with(tmp_path, tiny_checkpoint, edit):
    """A run directory whose last.pt is the tiny checkpoint after ``edit(state)``."""
    state = load_checkpoint(tiny_checkpoint)
    edit(state)
    atomic_save(state, tmp_path / "checkpoints" / "last.pt")
    return tmp_path


def test_resume_never_unpickles_the_rng_state(tmp_path, tiny_checkpoint):
    # The numpy RNG state used to be stored as pickled bytes and restored with pickle.loads: a crafted last.pt ran
    # arbitrary code on --resume although the checkpoint itself was read with weights_only=True.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = torch.frombuffer(bytearray(pickle.dumps(Evil())), dtype=torch.uint8)
    run = _resume_dir_with(tmp_path / "run", tiny_checkpoint, lambda s: s["rng"].__setitem__("numpy", payload))
    with pytest.raises(CheckpointError, match="rng"):
        train(debug_cfg(run), resume=True)
    assert not marker.exists()


def test_new_checkpoints_hold_no_pickled_bytes_and_restore_every_rng(tmp_path):
    import random

    import numpy as np

    from hjepa.train.checkpoint import restore_rng_state, rng_state

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # leaves a cached second gaussian in Python's state
    np.random.standard_normal()  # and in numpy's
    saved = rng_state()
    assert all(isinstance(v, (torch.Tensor, int, float, type(None))) for group in saved.values()
               for v in (group.values() if isinstance(group, dict) else [group]))
    expected = (random.gauss(0, 1), float(np.random.standard_normal()), float(torch.rand(1)))
    restore_rng_state(saved)
    assert (random.gauss(0, 1), float(np.random.standard_normal()), float(torch.rand(1))) == expected
    # Checkpoints written before held numpy's state as a pickled tuple; it still loads, through an allow-list.
    np.random.seed(4)
    pickled = torch.frombuffer(bytearray(pickle.dumps(np.random.get_state())), dtype=torch.uint8)
    legacy = {**rng_state(), "numpy": pickled}
    draws = np.random.rand(3)
    restore_rng_state(legacy)
    assert (np.random.rand(3) == draws).all()


def test_resume_between_log_steps_reproduces_the_metrics_and_knn(tmp_path):
    # Stopping at step 3 with log_every=2 wrote a record for step 3 alone and restarted the averaging window on
    # resume, so the resumed metrics.jsonl had an extra record and a different step-4 loss than the full run.
    sets = ["train.knn_every=2", "train.knn_train_samples=40", "train.knn_test_samples=20"]
    full, part = tmp_path / "full", tmp_path / "part"
    train(debug_cfg(full, *sets))
    train(debug_cfg(part, *sets), stop_at=3)
    train(debug_cfg(part, *sets), resume=True)
    timing = {"time", "images_per_s", "data_time", "memory_gb"}

    def records(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    assert [r["step"] for r in records(full)] == [2, 2, 4, 4, 6, 6]  # loss and k-NN records
    assert records(part) == records(full)


def test_resume_after_a_crash_between_log_steps_keeps_the_averaging_window(tmp_path, monkeypatch):
    # A crash after the periodic checkpoint at step 3 (log_every=2): the step-4 record of the resumed run must still
    # average steps 3 and 4, as the uninterrupted run's does.
    full, part = tmp_path / "full", tmp_path / "part"
    train(debug_cfg(full))
    original = HJEPA.forward

    def crash_at_4(self, images, masks, step=0):
        if step == 4:
            raise KeyboardInterrupt
        return original(self, images, masks, step)

    monkeypatch.setattr(HJEPA, "forward", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(debug_cfg(part))
    monkeypatch.setattr(HJEPA, "forward", original)
    train(debug_cfg(part), resume=True)
    assert losses(part) == losses(full)


def test_a_failing_start_leaves_an_existing_run_untouched(tmp_path):
    train(debug_cfg(tmp_path, "train.steps=2"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "metrics.jsonl", tmp_path / "config.yaml")}
    # Fails while building the masks (one 4x4 cell); used to delete metrics.jsonl and rewrite config.yaml first.
    with pytest.raises(ValueError, match="single 4x4 cell"):
        train(debug_cfg(tmp_path, "train.steps=2", "model.num_levels=3"), overwrite=True)
    with pytest.raises(ValueError, match="min_keep"):  # same for a resume whose masks cannot be made
        train(debug_cfg(tmp_path, "train.steps=4", "masks.min_keep=16"), resume=True)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_out_dir_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "taken"
    path.write_text("not a directory")
    with pytest.raises(ConfigError, match="not a directory"):
        train(debug_cfg(path))
    assert path.read_text() == "not a directory"


def test_stop_at_must_be_a_positive_step(tmp_path):
    with pytest.raises(ConfigError, match="stop"):
        train(debug_cfg(tmp_path), stop_at=0)
    assert not tmp_path.joinpath("config.yaml").exists()


def test_resuming_a_finished_run_reports_its_final_loss(tmp_path):
    first = train(debug_cfg(tmp_path))
    again = train(debug_cfg(tmp_path), resume=True)
    assert again.final_loss == first.final_loss  # was nan: no step ran


def test_resume_with_a_damaged_checkpoint_entry_is_a_checkpoint_error(tmp_path, tiny_checkpoint):
    run = _resume_dir_with(tmp_path, tiny_checkpoint, lambda s: s.pop("optimizer"))
    with pytest.raises(CheckpointError, match="optimizer"):
        train(debug_cfg(run), resume=True)


def test_result_counts_the_steps_actually_run(tmp_path):
    # --stop-after 3 printed "steps: 6" (the configured total) although the run stopped at step 3.
    assert train(debug_cfg(tmp_path), stop_at=3).steps == 3
    assert train(debug_cfg(tmp_path), resume=True).steps == 6


def test_checkpoints_are_readable_as_the_umask_allows(tmp_path):
    # mkstemp creates files with mode 0600, so atomic writes left every checkpoint unreadable to the group and to
    # other users (a serving or evaluation job under another account) where torch.save gives 0644.
    old = os.umask(0o022)
    try:
        atomic_save({"x": torch.zeros(1)}, tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644


def test_resume_survives_a_half_written_metrics_line(tmp_path):
    # A run killed while appending to metrics.jsonl leaves a partial last line; resuming then failed in json.loads
    # and could not continue at all until the file was edited by hand.
    train(debug_cfg(tmp_path), stop_at=4)
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "los')
    train(debug_cfg(tmp_path), resume=True)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_a_second_run_in_the_same_directory_needs_resume_or_overwrite(tmp_path):
    train(debug_cfg(tmp_path, "train.steps=4", "train.checkpoint_every=1"))
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        train(debug_cfg(tmp_path, "train.steps=2"))
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    train(debug_cfg(tmp_path, "train.steps=2"), overwrite=True)
    # Nothing of the first run is left to be mistaken for this one's: its step_3 / step_4 checkpoints are gone.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]


def test_resuming_with_settings_that_change_the_run_warns_naming_them(tmp_path, recwarn):
    train(debug_cfg(tmp_path), stop_at=2)
    train(debug_cfg(tmp_path, "train.log_every=1", "train.progress=false"), stop_at=3, resume=True)
    assert not [w for w in recwarn if "resuming" in str(w.message)]  # logging settings do not change the run
    with pytest.warns(UserWarning, match=r"optim\.lr: 0\.001 -> 0\.0005.*will not match"):
        train(debug_cfg(tmp_path, "optim.lr=5e-4"), resume=True)
