"""``hjepa-eval knn | linear-probe | all`` on the tiny digits checkpoint: tables, JSON reports, cache reuse, errors."""

import json

import pytest
from click.testing import CliRunner

from hjepa.cli.evaluate import main


def run(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture
def cache_args(tmp_path):
    return ["--cache-dir", str(tmp_path / "cache"), "--no-progress"]


def test_knn_all_levels_prints_a_table_and_writes_json(tiny_checkpoint, tmp_path, cache_args):
    out = tmp_path / "reports" / "knn.json"
    result = run("knn", tiny_checkpoint, "--dataset", "digits", "--level", "all", "--k", "10", "--k", "20",
                 "--out", out, *cache_args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("level"))
    assert header.split() == ["level", "knn@10", "top1", "knn@10", "top5", "knn@20", "top1", "knn@20", "top5"]
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["0", "1"]
    report = json.loads(out.read_text())
    assert report["source"] == str(tiny_checkpoint) and report["backend"].startswith("torch")
    assert report["splits"] == {"train": 1437, "test": 360}
    assert {"extract_s", "knn_s", "total_s"} <= set(report["timings"])
    for row in rows:  # the printed numbers are the ones in the JSON
        assert float(row[1]) == pytest.approx(report["levels"][row[0]]["knn"]["10"]["top1"], abs=0.006)
    assert f"report: {out}" in result.output


def test_all_runs_both_protocols_and_reuses_cached_features(tiny_checkpoint, tmp_path, cache_args):
    args = ["all", tiny_checkpoint, "--dataset", "digits", "--level", "1", "--train-limit", "500",
            "--probe-epochs", "10", *cache_args]
    first = run(*args, "--out", tmp_path / "first.json")
    assert first.exit_code == 0, first.output
    assert "features level 1: train miss" in first.output and "linear top1" in first.output
    cache_files = sorted((tmp_path / "cache").iterdir())
    assert len(cache_files) == 2  # level 1, train and test
    mtimes = [path.stat().st_mtime_ns for path in cache_files]

    second = run(*args, "--out", tmp_path / "second.json")
    assert second.exit_code == 0, second.output
    assert "features level 1: train hit" in second.output and "test hit" in second.output
    assert sorted((tmp_path / "cache").iterdir()) == cache_files
    assert [path.stat().st_mtime_ns for path in cache_files] == mtimes
    reports = [json.loads((tmp_path / name).read_text()) for name in ("first.json", "second.json")]
    assert reports[0]["levels"] == reports[1]["levels"]
    assert reports[1]["features"]["1"]["train"]["cache"] == "hit"
    assert reports[0]["splits"]["train"] == 500 and sorted(reports[0]["levels"]["1"]) == ["knn", "linear"]


def test_random_init_baseline_gives_a_report(tmp_path, cache_args):
    out = tmp_path / "random.json"
    result = run("linear-probe", "--random-init", "digits-debug", "--dataset", "digits", "--classifier", "logreg",
                 "--train-limit", "300", "--out", out, *cache_args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["source"] == "random-init:digits-debug" and report["kind"] == "random-init"
    assert sorted(report["levels"]) == ["0", "1"] and "logreg top1" in result.output
    assert all(0.0 <= results["logreg"]["top1"] <= 100.0 for results in report["levels"].values())


def test_level_not_in_the_source_fails_with_its_levels(tiny_checkpoint, cache_args):
    result = run("knn", tiny_checkpoint, "--dataset", "digits", "--level", "5", *cache_args)
    assert result.exit_code != 0
    assert "level 5 is not in" in result.output and "available levels: [0, 1]" in result.output
    assert "Traceback" not in result.output


def test_missing_fashion_mnist_dir_names_the_path(tiny_checkpoint, tmp_path, cache_args):
    missing = tmp_path / "no-such-dir"
    result = run("knn", tiny_checkpoint, "--dataset", "fashion-mnist", "--data-dir", missing, *cache_args)
    assert result.exit_code != 0 and str(missing) in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line, no traceback


def test_nonexistent_source_and_missing_source_fail(tmp_path, cache_args):
    result = run("all", tmp_path / "missing.pt", "--dataset", "digits", *cache_args)
    assert result.exit_code != 0 and "missing.pt does not exist" in result.output
    result = run("knn", "--dataset", "digits", *cache_args)
    assert result.exit_code != 0 and "--random-init" in result.output


def test_unknown_dataset_lists_the_valid_names(tiny_checkpoint, cache_args):
    result = run("knn", tiny_checkpoint, "--dataset", "mnist", *cache_args)
    assert result.exit_code != 0 and "valid names" in result.output and "fashion-mnist" in result.output


def test_umbrella_cli_registers_eval():
    from hjepa.cli.main import cli

    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0 and "knn" in result.output and "linear-probe" in result.output


def test_report_path_under_a_file_fails_first_in_one_line(tiny_checkpoint, tmp_path, cache_args):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    result = run("knn", tiny_checkpoint, "--dataset", "digits", "--train-limit", "50", "--test-limit", "20",
                 "--out", blocker / "report.json", *cache_args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(blocker) in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()  # refused before any feature was extracted
    assert blocker.read_text() == "keep me"


def test_unwritable_cache_warns_and_still_reports(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    out = tmp_path / "report.json"
    result = run("knn", tiny_checkpoint, "--dataset", "digits", "--train-limit", "50", "--test-limit", "20",
                 "--cache-dir", blocker, "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"warning: cannot write feature cache {blocker}" in result.output and "Traceback" not in result.output
    assert json.loads(out.read_text())["features"]["0"]["train"]["cache"] == "miss"


def test_k_larger_than_the_bank_is_a_one_line_warning_and_noted(tiny_checkpoint, tmp_path, cache_args):
    out = tmp_path / "small.json"
    result = CliRunner().invoke(main, ["knn", str(tiny_checkpoint), "--dataset", "digits", "--level", "0",
                                       "--train-limit", "12", "--test-limit", "10", "--out", str(out), *cache_args])
    assert result.exit_code == 0, result.output
    assert "_contextlib.py" not in result.output and "return func(" not in result.output  # no torch source lines
    assert "warning: k=20 exceeds the 12 train features; using k=12" in result.output
    assert "knn@20 used k=12" in result.output
    assert json.loads(out.read_text())["levels"]["0"]["knn"]["20"]["k_used"] == 12


def test_knn_of_the_grid_with_the_pixel_baseline(tiny_checkpoint, tmp_path, cache_args):
    """``--feature grid``: the report says so and the features are the level's cells flattened; the pixel baseline
    is the picture either way; a feature that does not exist is one line naming the choices."""
    out = tmp_path / "grid.json"
    result = run("knn", tiny_checkpoint, "--dataset", "digits", "--level", "0", "--feature", "grid", "--baseline",
                 "pixels", "--train-limit", "200", "--test-limit", "50", "--out", out, *cache_args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["protocol"]["feature"] == "grid" and report["features"]["0"]["test"]["dim"] == 16 * 32
    assert report["baselines"]["pixels"]["features"]["0"]["test"]["dim"] == 16 * 16  # grey digits: one channel
    bad = CliRunner().invoke(main, ["knn", str(tiny_checkpoint), "--dataset", "digits", "--feature", "cls"])
    assert bad.exit_code != 0 and "'cls' is not one of 'pooled', 'grid'" in bad.output
