"""hjepa.files: atomic files and staged folders, fsync, modes from the umask; and no writer going around it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from hjepa import files

ROOT = Path(__file__).resolve().parents[1] / "hjepa"


@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_modes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert files.current_umask() == mask
    files.atomic_write_text(tmp_path / "a.txt", "x")
    files.atomic_write_bytes(tmp_path / "b.bin", b"x")
    with files.staged_directory(tmp_path / "folder") as stage:
        (stage / "inside.txt").write_text("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "folder").stat().st_mode & 0o777 == dir_mode


def test_reading_the_umask_leaves_it_unchanged(umask):
    umask(0o027)
    assert files.current_umask() == 0o027
    assert os.umask(0o027) == 0o027


def test_writes_are_fsynced(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    files.atomic_write_text(tmp_path / "a.txt", "x")
    assert len(synced) >= 2, "the file and its folder"
    synced.clear()
    with files.staged_directory(tmp_path / "folder") as stage:
        (stage / "inside.txt").write_text("y")
    assert len(synced) >= 3, "the file, the staged folder and the parent after the rename"


def test_a_crash_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), files.atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_path_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "model.bin"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.bin.")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]


def test_staged_directory_replaces_only_at_the_end(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), files.staged_directory(target) as stage:
        (stage / "new.txt").write_text("new")
        assert (target / "old.txt").exists(), "the old folder stays until the new one is complete"
        raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with files.staged_directory(target) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"], "no staging or backup folder left"


def test_remove_stale_temp_files(tmp_path):
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_text("")
    other = tmp_path / ".notes.txt.abc123.tmp"
    other.write_text("")
    assert files.remove_stale_temp_files(tmp_path, ["last.pt"]) == [stale]
    assert other.exists()


def _bypasses(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that create temporaries or rename files: ``tempfile.mkstemp`` & co, ``os.replace`` / ``os.rename``,
    ``shutil.move`` and ``Path.replace`` / ``Path.rename`` (one positional argument, unlike ``str.replace``)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, owner = node.func.attr, node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else ""
        if name in {"mkstemp", "mkdtemp", "NamedTemporaryFile"}:
            found.append((node.lineno, name))
        elif owner_name in {"os", "shutil"} and name in {"replace", "rename", "renames", "move"}:
            found.append((node.lineno, f"{owner_name}.{name}"))
        elif name in {"replace", "rename"} and len(node.args) == 1 and not node.keywords:
            found.append((node.lineno, f".{name}"))
    return found


def test_every_writer_goes_through_hjepa_files():
    wrong = [
        f"{path.relative_to(ROOT.parent)}:{line} {call}"
        for path in sorted(ROOT.rglob("*.py")) if path != ROOT / "files.py"
        for line, call in _bypasses(ast.parse(path.read_text()))
    ]
    assert not wrong, "write through hjepa.files instead:\n" + "\n".join(wrong)


def test_the_writer_rule_catches_a_bypass():
    code = "fd, p = tempfile.mkstemp()\nos.replace(p, 'x')\nPath(p).replace(q)\n'a'.replace('a', 'b')"
    assert [call for _, call in _bypasses(ast.parse(code))] == ["mkstemp", "os.replace", ".replace"]
