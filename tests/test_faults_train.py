"""Crash and bad-input cases of training (issue 14: 2, 5, 6, 7, 11): nothing of the user's may be lost or trusted
when damaged, and every failure is one line."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hjepa.config import load_config
from hjepa.models import HJEPA
from hjepa.train import CheckpointError, NonFiniteLossError, load_checkpoint, train
from hjepa.train.checkpoint import atomic_save


def debug_cfg(out, *extra):
    return load_config("digits-debug", [f"train.out_dir={out}", *extra])


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0, result.output
    return result.output


def flip_tensor_bytes(path: Path, count: int = 100) -> None:
    """Invert ``count`` bytes in the middle of the largest tensor record, as a bad disk or a careless copy would."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2 - count // 2
    assert info.file_size >= count
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- 2. corrupt checkpoints -------------------------------------------------------------------------------------


@pytest.fixture
def corrupt_run(tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    target = run / "checkpoints" / "last.pt"
    target.write_bytes(tiny_checkpoint.read_bytes())
    flip_tensor_bytes(target)
    return target


def test_a_checkpoint_with_flipped_bytes_is_refused_naming_the_file(corrupt_run):
    with pytest.raises(CheckpointError, match=f"{corrupt_run}.*corrupt") as info:
        load_checkpoint(corrupt_run)
    assert "\n" not in str(info.value)


def test_resume_export_and_eval_refuse_a_corrupt_checkpoint_in_one_line(corrupt_run):
    from hjepa.cli.evaluate import main as eval_main
    from hjepa.cli.export import main as export_main
    from hjepa.cli.train import main as train_main

    run = corrupt_run.parent.parent
    output = one_line_error(CliRunner().invoke(train_main, ["--config", "digits-debug", "--out", str(run),
                                                            "--resume", "--set", "train.steps=9"]))
    assert "corrupt" in output and "last.pt" in output
    output = one_line_error(CliRunner().invoke(export_main, [str(corrupt_run), "--out", str(run / "exp")]))
    assert "corrupt" in output and not (run / "exp").exists()
    output = one_line_error(CliRunner().invoke(eval_main, ["knn", str(corrupt_run), "--dataset", "digits",
                                                           "--no-cache", "--no-progress"]))
    assert "corrupt" in output


def test_serving_refuses_a_corrupt_checkpoint(corrupt_run):
    from hjepa.train.checkpoint import load_model

    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(corrupt_run)  # what the torch runtime of hjepa-serve and hjepa-eval calls


def test_a_checkpoint_without_the_digest_still_loads_and_is_checked_by_its_crcs(tmp_path, tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    assert "model_sha256" in state
    del state["model_sha256"]  # as written before the digest existed
    old = tmp_path / "old.pt"
    atomic_save(state, old)
    assert load_checkpoint(old)["step"] == 6
    flip_tensor_bytes(old)
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(old)


def test_weights_that_do_not_match_the_digest_are_refused(tmp_path, tiny_checkpoint):
    # A file re-zipped with fresh CRCs (or written with torch's CRCs switched off) is still checked by the digest.
    state = load_checkpoint(tiny_checkpoint)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1
    changed = tmp_path / "changed.pt"
    atomic_save(state, changed)
    with pytest.raises(CheckpointError, match=f"{changed}.*digest"):
        load_checkpoint(changed)


# ---- 5. temporary files and SIGTERM -----------------------------------------------------------------------------


def test_temporary_files_of_killed_writes_are_removed_at_the_next_start(tmp_path):
    train(debug_cfg(tmp_path), stop_at=3)
    ckpt_dir = tmp_path / "checkpoints"
    stale = [ckpt_dir / ".last.pt.k1ll3d_a.tmp", ckpt_dir / ".step_00000003.pt.x9y8z7w6.tmp",
             tmp_path / ".metrics.jsonl.abcd1234.tmp", tmp_path / ".config.yaml.q1w2e3r4.tmp"]
    mine = [ckpt_dir / "notes.tmp", tmp_path / ".my_notes.txt"]
    for path in stale + mine:
        path.write_bytes(b"x" * 100)
    train(debug_cfg(tmp_path), resume=True)
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in mine)


def test_sigterm_stops_training_like_ctrl_c_with_one_line(tmp_path, monkeypatch):
    from hjepa.cli.train import main as train_main

    original = HJEPA.forward

    def terminated_at_4(self, images, masks, step=0):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, images, masks, step)

    def unhandled(signum, frame):  # stands in for the default action, which would end pytest itself
        raise RuntimeError("SIGTERM reached the default handler")

    monkeypatch.setattr(HJEPA, "forward", terminated_at_4)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        result = CliRunner().invoke(train_main, ["--config", "digits-debug", "--out", str(tmp_path)])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command's handler does not outlive it
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    output = one_line_error(result)
    assert "SIGTERM" in output and "--resume" in output
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []


# ---- 6. metrics history -----------------------------------------------------------------------------------------

_KILLED_WHILE_WRITING = """
import os, sys
from pathlib import Path
from hjepa.train.logging import MetricsLogger

out = Path(sys.argv[1]).resolve()

def kill_at_first_write(event, args):
    # SIGKILL right after a file in the run folder is opened for writing: what O_TRUNC emptied stays empty.
    if event == "open" and isinstance(args[0], (str, Path)) and str(Path(args[0]).resolve()).startswith(str(out)):
        flags = args[2] or 0
        if flags & (os.O_WRONLY | os.O_RDWR):
            if flags & os.O_TRUNC:
                os.truncate(args[0], 0)
            os._exit(137)

sys.addaudithook(kill_at_first_write)
MetricsLogger(out, tensorboard=False).truncate_after(int(sys.argv[2]))
"""


def test_a_kill_while_resume_rewrites_the_metrics_keeps_them(tmp_path):
    train(debug_cfg(tmp_path, "train.log_every=1"))
    metrics = tmp_path / "metrics.jsonl"
    before = metrics.read_text()
    assert before.count("\n") == 6
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, str(tmp_path), "3"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 137, child.stderr[-2000:]
    assert metrics.read_text() == before  # the old history, not an empty file


# ---- 7. config.yaml describes the checkpoint --------------------------------------------------------------------


def test_a_failed_resume_leaves_config_yaml_describing_the_checkpoint(tmp_path, nan_loss_from):
    train(debug_cfg(tmp_path))
    before = (tmp_path / "config.yaml").read_text()
    nan_loss_from(6)
    with pytest.raises(NonFiniteLossError, match="step 6"), pytest.warns(UserWarning, match="optim.lr"):
        train(debug_cfg(tmp_path, "train.steps=12", "optim.lr=0.5"), resume=True)
    assert (tmp_path / "config.yaml").read_text() == before
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6

    nan_loss_from(None)  # a resume that writes a checkpoint writes its config with it
    with pytest.warns(UserWarning, match="train.steps"):
        train(debug_cfg(tmp_path, "train.steps=9"), resume=True)
    assert load_config(tmp_path / "config.yaml").train.steps == 9


# ---- 11. a DataLoader worker's error is one line ----------------------------------------------------------------


def test_a_truncated_jpeg_read_by_a_worker_is_one_line(tmp_path):
    from hjepa.cli.train import main as train_main

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = tmp_path / "data" / "train" / label
        folder.mkdir(parents=True)
        for i in range(10):
            path = folder / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path, quality=95)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # every image truncated
    result = CliRunner().invoke(train_main, [
        "--config", "digits-debug", "--out", str(tmp_path / "run"), "--set", "data.dataset=imagefolder",
        "--set", f"data.data_dir={tmp_path / 'data'}", "--set", "data.num_workers=2"])
    output = one_line_error(result)
    assert "cannot decode image" in output and "truncated" in output and "Traceback" not in output


# ---- 8. (export side) an export size that cannot fit ------------------------------------------------------------


def test_export_refuses_an_image_size_that_cannot_fit(tiny_checkpoint, tmp_path):
    from hjepa.cli.export import main as export_main

    result = CliRunner().invoke(export_main, [str(tiny_checkpoint), "--img-size", "100000",
                                              "--out", str(tmp_path / "exp")])
    output = one_line_error(result)
    assert "100000" in output and "tokens" in output


def test_flip_tensor_bytes_fits_torch_save_archives(tiny_checkpoint):
    # flip_tensor_bytes relies on torch.save's layout: uncompressed (stored) records with CRCs.
    with zipfile.ZipFile(tiny_checkpoint) as archive:
        records = [i for i in archive.infolist() if "/data/" in i.filename]
    assert records and all(i.compress_type == zipfile.ZIP_STORED and i.CRC for i in records)
    assert torch.load(tiny_checkpoint, weights_only=True)["step"] == 6
