"""hjepa-embed on the local engine: inputs (folder, path lists, dataset), skipped files, the manifest, features equal
to hjepa-eval's, ``--out`` refusals, and resume after SIGKILL at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from embed_helpers import BROKEN, TEST_MAX_PIXELS, make_folder, read_errors, read_rows

from hjepa.cli.embed import main as embed_cli
from hjepa.embed import EmbedOptions, embed_collection
from hjepa.embed.manifest import OutputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("pictures")
    return root, make_folder(root)


@pytest.fixture(scope="module")
def embedded(tiny_checkpoint, folder, tmp_path_factory) -> Path:
    """The folder embedded once at every level with grids (workers on, small shards)."""
    out = tmp_path_factory.mktemp("embedded") / "out"
    embed_collection(EmbedOptions(str(tiny_checkpoint), str(folder[0]), str(out), grid=True, shard_size=4,
                                  batch_size=3, workers=2, max_pixels=TEST_MAX_PIXELS, progress=False))
    return out


def test_folder_rows_errors_and_manifest(embedded, folder) -> None:
    _, ids = folder
    rows = read_rows(embedded, ["level0", "level1", "level0_grid"])
    assert sorted(rows) == ids  # every readable picture once, nested paths relative to INPUT; .txt never listed
    assert read_errors(embedded) == BROKEN
    manifest = json.loads((embedded / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rows"] == len(ids) and manifest["skipped"] == 3
    assert manifest["levels"] == [0, 1] and manifest["dims"] == {"0": 32, "1": 32}
    assert manifest["model"]["hash"] and manifest["hjepa_version"]
    assert manifest["job"]["preprocessing"]["img_size"] == 16
    schema = pq.read_schema(sorted(embedded.glob("part-*.parquet"))[0])
    assert schema.field("level0").type == pa.list_(pa.float32(), 32)
    assert schema.field("level0_grid").type == pa.list_(pa.float32(), 4 * 4 * 32)  # level 0: the 4x4 patch grid
    grid = np.asarray(rows[ids[0]]["level0_grid"]).reshape(16, 32)
    assert not np.allclose(grid, grid[0])  # real token maps, not a broadcast pooled vector
    assert not list(embedded.glob(".*"))  # no temporaries left behind


def test_features_equal_hjepa_eval(tiny_checkpoint, tmp_path) -> None:
    """The same images through hjepa-eval's extraction (image folder, same batch) give the same numbers."""
    from hjepa.data import build_dataset
    from hjepa.evaluation.run import extract_pooled
    from hjepa.evaluation.sources import resolve_source

    ids = make_folder(tmp_path / "data" / "val", count=10)
    out = tmp_path / "out"
    embed_collection(EmbedOptions(str(tiny_checkpoint), str(tmp_path / "data" / "val"), str(out), batch_size=64,
                                  workers=1, progress=False, max_pixels=TEST_MAX_PIXELS))
    rows = read_rows(out, ["level0", "level1"])
    data = build_dataset("imagefolder", "test", data_dir=str(tmp_path / "data"))
    readable = [i for i, (path, _) in enumerate(data.samples) if path.relative_to(tmp_path / "data" / "val").as_posix()
                in set(ids)]
    data = data.subset(readable)  # hjepa-eval stops on a broken file; hjepa-embed skips it
    features = extract_pooled(resolve_source(str(tiny_checkpoint)), data, [0, 1], batch_size=64, progress=False)
    for level in (0, 1):
        expected = features[level][0].numpy()
        for row, (path, _) in enumerate(data.samples):
            got = np.asarray(rows[path.relative_to(tmp_path / "data" / "val").as_posix()][f"level{level}"])
            np.testing.assert_allclose(got, expected[row], rtol=0, atol=1e-6)


def test_dataset_name_and_path_lists(tiny_checkpoint, folder, embedded, tmp_path) -> None:
    """A dataset name (ids are indices, values as hjepa-eval's), a .txt list and a Parquet list."""
    from hjepa.data import build_dataset
    from hjepa.evaluation.run import extract_pooled
    from hjepa.evaluation.sources import resolve_source

    out = tmp_path / "digits"
    embed_collection(EmbedOptions(str(tiny_checkpoint), "digits", str(out), levels="1", split="test",
                                  shard_size=100, batch_size=64, workers=0, progress=False))
    rows = read_rows(out, ["level1"])
    data = build_dataset("digits", "test")
    assert sorted(rows) == list(range(len(data)))
    expected = extract_pooled(resolve_source(str(tiny_checkpoint)), data, [1], batch_size=64, progress=False)[1][0]
    np.testing.assert_allclose(np.stack([rows[i]["level1"] for i in range(len(data))]), expected.numpy(), atol=1e-6)

    root, ids = folder
    relative = [os.path.relpath(root / i, tmp_path) for i in ids[:5]]
    listed = relative + [relative[0], os.path.relpath(root / "b/cut.jpg", tmp_path), str(root / ids[6])]
    (tmp_path / "list.txt").write_text("# a repeat, a broken file, an absolute path\n" + "\n".join(listed) + "\n")
    pq.write_table(pa.table({"path": [str((tmp_path / entry).resolve()) for entry in listed]}), tmp_path / "l.parquet")
    reference = read_rows(embedded, ["level0"])
    for source in (tmp_path / "list.txt", tmp_path / "l.parquet"):
        out = tmp_path / f"out-{source.suffix}"
        summary = embed_collection(EmbedOptions(str(tiny_checkpoint), str(source), str(out), levels="0", workers=0,
                                                progress=False, max_pixels=TEST_MAX_PIXELS))
        assert summary["rows"] == 6 and summary["skipped"] == 1 and summary["inputs"] == 7  # the repeat dropped
        got = read_rows(out, ["level0"])
        assert set(got) | set(read_errors(out)) == set(dict.fromkeys(listed)) or source.suffix == ".parquet"
        for item_id, row in got.items():  # the same picture gives the same vector whatever lists it
            picture = (tmp_path / item_id).resolve().relative_to(root.resolve()).as_posix()
            np.testing.assert_allclose(row["level0"], reference[picture]["level0"], atol=1e-6)


def test_out_refusals_and_cli(tiny_checkpoint, folder, embedded, tmp_path) -> None:
    root, _ = folder
    runner = CliRunner()
    base = [str(tiny_checkpoint), str(root), "--out"]
    # Another job in --out: refused, in one line, nothing touched.
    before = {p.name: p.stat().st_mtime_ns for p in embedded.iterdir()}
    result = runner.invoke(embed_cli, [*base, str(embedded), "--level", "0", "--no-progress"])
    assert result.exit_code == 1 and "holds a finished embed job" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in embedded.iterdir()} == before
    with pytest.raises(OutputError, match="differs in levels"):
        embed_collection(EmbedOptions(str(tiny_checkpoint), str(root), str(embedded), levels="0", resume=True))
    # A folder that is not an embed output is never written into.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    result = runner.invoke(embed_cli, [*base, str(foreign), "--no-progress"])
    assert result.exit_code == 1 and "holds no hjepa-embed manifest" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
    # Bad input: one line, exit 1.
    result = runner.invoke(embed_cli, [str(tiny_checkpoint), str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(embed_cli, [str(tiny_checkpoint), "no-such-dataset", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "neither a folder" in result.output
    # The CLI end to end, then --overwrite replaces the job.
    out = tmp_path / "cli"
    result = runner.invoke(embed_cli, [*base, str(out), "--level", "1", "--max-megapixels", "0.02", "--workers",
                                       "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "embedded 14 of 17 inputs" in result.output and "skipped 3 (1 not-an-image, 1 too-large, 1 truncated)" \
        in result.output
    result = runner.invoke(embed_cli, [*base, str(out), "--level", "0", "--overwrite", "--workers", "0",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["levels"] == [0]


def test_resume_after_sigkill_at_random_moments(tiny_checkpoint, tmp_path) -> None:
    """Kill the command (SIGKILL) three times at seeded random moments while it writes shards, then --resume: every
    readable id exactly once, values equal to an uninterrupted run, finished shards untouched."""
    ids = make_folder(tmp_path / "pictures", count=27, seed=1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hjepa.cli.embed", str(tiny_checkpoint), str(tmp_path / "pictures"), "--out",
               str(out), "--shard-size", "2", "--batch-size", "1", "--workers", "1", "--level", "0",
               "--max-megapixels", "0.02", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    rng = random.Random(23)
    shards, kept = 15, {}
    targets = sorted(rng.sample(range(2, shards - 6), 3))  # kill once this many shards are on disk, + jitter
    for attempt, target in enumerate(targets):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300  # a loaded CI machine can take a minute to import torch
        while len(list(out.glob("part-*.parquet"))) < target and process.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.01))
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the run ended before it was killed"
        finished = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
        assert target <= len(finished) < shards
        assert all(kept[name] == finished[name] for name in kept)  # a finished shard is never rewritten
        kept = finished
    summary = embed_collection(EmbedOptions(str(tiny_checkpoint), str(tmp_path / "pictures"), str(out), levels="0",
                                            shard_size=2, workers=1, resume=True, progress=False,
                                            max_pixels=TEST_MAX_PIXELS))
    assert summary["resumed"] and summary["shards_run"] == shards - len(kept) and summary["rows"] == len(ids)
    assert all(kept[name] == (out / name).stat().st_mtime_ns for name in kept)
    rows = read_rows(out, ["level0"])
    assert sorted(rows) == ids
    assert read_errors(out) == BROKEN
    assert not list(out.glob(".*"))
    clean = tmp_path / "clean"
    embed_collection(EmbedOptions(str(tiny_checkpoint), str(tmp_path / "pictures"), str(clean), levels="0",
                                  workers=0, shard_size=5, progress=False, max_pixels=TEST_MAX_PIXELS))
    reference = read_rows(clean, ["level0"])
    for item_id in ids:
        np.testing.assert_allclose(rows[item_id]["level0"], reference[item_id]["level0"], atol=1e-6)
