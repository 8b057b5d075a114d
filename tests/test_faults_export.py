"""Export faults: a re-export never deletes what its previous manifest does not list, and staging folders left by a
killed export do not outlive the next export into the same folder."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hjepa.cli.export import main

LOCK_NAME = ".lock"  # hjepa.export.staging.LOCK_NAME (a test checks they agree)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def export_cli(checkpoint: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, [str(checkpoint), "--out", str(out), "--no-fuse", *extra])


@pytest.fixture(scope="module")
def triton_export(tiny_checkpoint, tmp_path_factory) -> Path:
    """Both levels as ONNX and a Triton repository, made once and copied by each test."""
    out = tmp_path_factory.mktemp("first") / "deploy"
    result = export_cli(tiny_checkpoint, out, "--format", "onnx", "--format", "triton")
    assert result.exit_code == 0, result.output
    return out


def copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


# The names of the reproduction: each matches the export's own name patterns (level*.onnx, triton/), which
# is why a check by pattern let the re-export delete them.
@pytest.mark.parametrize("foreign", [
    ["levels_backup_2024.onnx", "triton/prod_model/config.pbtxt"],
    ["level0_finetuned_by_me.onnx", "triton/my_own_model/config.pbtxt", "triton/my_own_model/1/model.onnx"],
    ["triton/hjepa_l0/2/model.onnx"],  # a version the user added inside a model folder the export wrote
], ids=["backup-and-prod-model", "finetuned-and-own-model", "own-version"])
def test_reexport_never_deletes_files_the_manifest_does_not_list(tiny_checkpoint, triton_export, tmp_path, foreign):
    out = copy_tree(triton_export, tmp_path / "deploy")
    for name in foreign:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"the user's own {name}")
    before = snapshot(out)
    result = export_cli(tiny_checkpoint, out, "--format", "onnx", "--format", "triton")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0, result.output
    assert all(name in result.output for name in foreign), result.output
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]  # no staging folder left either


def test_reexport_replaces_everything_its_manifest_lists(tiny_checkpoint, triton_export, tmp_path):
    out = copy_tree(triton_export, tmp_path / "deploy")
    manifest = json.loads((out / "manifest.json").read_text())
    assert "triton/hjepa_l1/1/model.onnx" in manifest["files"] and "manifest.json" in manifest["files"]
    result = export_cli(tiny_checkpoint, out, "--level", "0")
    assert result.exit_code == 0, result.output
    assert sorted(snapshot(out)) == ["level0.onnx", "manifest.json"]


def test_a_manifest_without_a_file_list_owns_what_its_levels_name(tiny_checkpoint, triton_export, tmp_path):
    # Exports written before manifests listed their files: the level entries name the ONNX files and Triton folders.
    out = copy_tree(triton_export, tmp_path / "deploy")
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "levels_backup_2024.onnx").write_text("mine")
    result = export_cli(tiny_checkpoint, out, "--level", "1")
    assert result.exit_code == 1 and "levels_backup_2024.onnx" in result.output, result.output
    (out / "levels_backup_2024.onnx").unlink()
    result = export_cli(tiny_checkpoint, out, "--level", "1")
    assert result.exit_code == 0, result.output
    assert sorted(snapshot(out)) == ["level1.onnx", "manifest.json"]


def stage_left_by_a_dead_export(out: Path) -> Path:
    """A staging folder as a killed export leaves it: the lock file is there but nobody holds it."""
    stage = out.parent / f".{out.name}.partial-dead1234"
    (stage / "triton").mkdir(parents=True)
    (stage / "level0.onnx").write_bytes(b"half a model")
    (stage / LOCK_NAME).write_text("12345\n")
    return stage


def test_stale_staging_folders_are_removed_by_the_next_export(tiny_checkpoint, tmp_path):
    out = tmp_path / "deploy"
    dead = stage_left_by_a_dead_export(out)
    # A folder of an older hjepa (no lock file), untouched for a day; and a backup of a commit that was killed.
    older = tmp_path / f".{out.name}.partial-old5678"
    (older / "level1.onnx").parent.mkdir()
    (older / "level1.onnx").write_bytes(b"x")
    os.utime(older, (time.time() - 86400, time.time() - 86400))
    backup = tmp_path / f".{out.name}.old-abcd"
    (backup / "previous").mkdir(parents=True)
    (backup / LOCK_NAME).write_text("")
    # An export that is still running (its lock is held) and a folder of another --out are left alone.
    live = tmp_path / f".{out.name}.partial-live9999"
    live.mkdir()
    (live / LOCK_NAME).write_text("")
    other = tmp_path / ".elsewhere.partial-1111"
    other.mkdir()
    with open(live / LOCK_NAME, "rb+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = export_cli(tiny_checkpoint, out, "--level", "0")
    assert result.exit_code == 0, result.output
    assert not dead.exists() and not older.exists() and not backup.exists()
    assert live.is_dir() and other.is_dir()
    assert sorted(snapshot(out)) == ["level0.onnx", "manifest.json"]


def test_a_backup_whose_commit_was_killed_is_put_back(tmp_path):
    # Killed between moving the old export aside and moving the new one in: the old export is restored.
    out = tmp_path / "deploy"
    backup = tmp_path / f".{out.name}.old-abcd"
    (backup / "previous").mkdir(parents=True)
    (backup / "previous" / "manifest.json").write_text("{}")
    (backup / LOCK_NAME).write_text("")
    from hjepa.export import staging

    assert staging.LOCK_NAME == LOCK_NAME
    staging.StagedDirectory(out).remove_stale()
    assert not backup.exists() and (out / "manifest.json").read_text() == "{}"


def start_export(checkpoint: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "hjepa.cli.export", str(checkpoint), "--level", "all", "--out", str(out)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_stage(process: subprocess.Popen, out: Path, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if any(out.parent.glob(f".{out.name}.partial-*/level0.onnx")):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_export_leaves_nothing_after_the_next_export(tiny_checkpoint, tmp_path, sig):
    out = tmp_path / "deploy"
    for _ in range(5):  # on a busy machine the small export can finish between the poll and the signal: try again
        process = start_export(tiny_checkpoint, out)
        try:
            assert wait_for_stage(process, out), "the export finished before it could be killed"
            process.send_signal(sig)
            output, _ = process.communicate(timeout=60)
        finally:
            process.kill()
        if process.returncode != 0:
            break
        shutil.rmtree(out)
    assert process.returncode != 0, "every export finished before the signal landed"
    if sig == signal.SIGTERM:  # handled like Ctrl-C: the staging folder is removed on the way out, no traceback
        assert "Traceback" not in output and "Aborted" in output, output
        assert sorted(p.name for p in tmp_path.iterdir()) == [], output
    result = export_cli(tiny_checkpoint, out, "--level", "0")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]
