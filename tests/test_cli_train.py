import json

import pytest
import torch
from click.testing import CliRunner

from hjepa.cli.main import cli
from hjepa.cli.train import main as train_main


def run(*args):
    result = CliRunner().invoke(train_main, [str(a) for a in args])
    return result.exit_code, result.output


def test_every_command_answers_help():
    for name in ("train", "export", "eval", "serve"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_list_presets():
    code, output = run("--list-presets")
    assert code == 0 and "fashion-mnist" in output and "digits-debug" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["--set", "model.depth=deep"], "model.depth"),
        (["--config", "nope"], "unknown preset 'nope'"),
        (["--set", "data.dataset=mnist"], "unknown dataset 'mnist'"),
        (["--set", "model.num_levels=4"], "not divisible"),
        (["--set", "model.num_levels=3"], "single 4x4 cell"),
        (["--resume"], "does not exist"),
        (["--set", "train.log_every=0"], "'train.log_every' must be >= 1"),
        (["--set", "optim.lr=[1e-3"], "'optim.lr'"),
        (["--stop-after", "0"], "--stop-after"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    code, output = run("--config", "digits-debug", "--out", tmp_path / "run", *args)
    assert code == 1, output
    assert output.startswith("Error: ") and message in output and output.strip().count("\n") == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    code, output = run("--config", "digits-debug", "--out", tmp_path, "--set", "train.device=cuda")
    assert code == 1 and "CUDA is not available" in output


def test_stop_after_then_resume_through_the_cli(tmp_path):
    code, output = run("--config", "digits-debug", "--out", tmp_path, "--stop-after", "2")
    assert code == 0 and "steps" in output
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    code, output = run("--config", "digits-debug", "--out", tmp_path, "--resume")
    assert code == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_out_dir_is_used_verbatim(tmp_path, monkeypatch):
    # --out went through YAML parsing as a --set value: a run directory named 2024 was read as an integer and
    # refused ("train.out_dir expects a string").
    monkeypatch.chdir(tmp_path)
    code, output = run("--config", "digits-debug", "--out", "2024", "--stop-after", "1")
    assert code == 0, output
    assert (tmp_path / "2024" / "checkpoints" / "last.pt").is_file()


def test_out_dir_that_is_a_file_is_a_one_line_error(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    code, output = run("--config", "digits-debug", "--out", taken)
    assert code == 1 and output.startswith("Error: ") and "not a directory" in output
    assert output.strip().count("\n") == 0 and taken.read_text() == "keep me"


def test_a_file_system_error_is_a_one_line_error(tmp_path, monkeypatch):
    import hjepa.train

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run"))

    monkeypatch.setattr(hjepa.train, "train", unwritable)
    code, output = run("--config", "digits-debug", "--out", tmp_path / "run")
    assert code == 1
    assert output.strip() == f"Error: [Errno 13] Permission denied: '{tmp_path / 'run'}'"


def test_a_second_run_into_the_same_out_is_refused_through_the_cli(tmp_path):
    assert run("--config", "digits-debug", "--out", tmp_path, "--set", "train.steps=1")[0] == 0
    code, output = run("--config", "digits-debug", "--out", tmp_path, "--set", "train.steps=1")
    assert code == 1 and "already holds a run" in output and "--overwrite" in output
    assert run("--config", "digits-debug", "--out", tmp_path, "--set", "train.steps=1", "--overwrite")[0] == 0


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    code, output = run("--config", "digits-debug", "--out", tmp_path, "--resume", "--overwrite")
    assert code == 2 and "give one of them" in output
    assert not any(tmp_path.iterdir())


def test_a_missing_data_folder_names_the_option_each_command_takes(tmp_path):
    code, output = run("--config", "fashion-mnist", "--out", tmp_path / "run", "--set", f"data.data_dir={tmp_path}/no")
    assert code == 1 and "--set data.data_dir=DIR" in output and "download=True" not in output
