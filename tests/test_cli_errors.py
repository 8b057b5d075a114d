"""The CLI's error wrapper: the project's own user errors are one line and exit 1; an internal bug keeps its
traceback (a KeyError from deep inside is not flattened into a message that hides where it came from)."""

import click
import pytest
from click.testing import CliRunner

from hjepa.cli.errors import user_errors
from hjepa.cli.train import main as train_main
from hjepa.config import ConfigError
from hjepa.data import DataError
from hjepa.device import DeviceUnavailableError
from hjepa.errors import HJEPAError, OptionError
from hjepa.evaluation.report import ReportError
from hjepa.export.errors import ExportError
from hjepa.inference.artifacts.checkpoint import CheckpointError
from hjepa.inference.artifacts.metadata import RuntimeSourceError, RuntimeUnavailableError
from hjepa.inference.runtimes.images import ImageError
from hjepa.registry import Registry, UnknownNameError
from hjepa.train.loop import NonFiniteLossError

USER_ERRORS = [ConfigError, DataError, DeviceUnavailableError, OptionError, ReportError, ExportError, CheckpointError,
               ImageError, RuntimeSourceError, RuntimeUnavailableError, UnknownNameError, NonFiniteLossError]


@pytest.mark.parametrize("error", USER_ERRORS, ids=lambda error: error.__name__)
def test_every_user_error_is_an_hjepa_error_and_becomes_one_line(error):
    assert issubclass(error, HJEPAError)
    with pytest.raises(click.ClickException) as excinfo, user_errors():
        raise error("level 7 is not in model.pt; available levels: [0, 1]")
    assert excinfo.value.message == "level 7 is not in model.pt; available levels: [0, 1]"


@pytest.mark.parametrize("error", [KeyError, ValueError, TypeError, RuntimeError])
def test_plain_errors_pass_through(error):
    with pytest.raises(error), user_errors():
        raise error("a bug")


def test_unknown_registry_name_is_a_key_error_that_prints_its_message():
    registry = Registry("widget")
    registry.register("round")(object)
    with pytest.raises(KeyError) as excinfo:
        registry.get("square")
    assert str(excinfo.value) == "unknown widget 'square'; valid names: round"


def test_user_error_prints_one_line_and_exits_1(tmp_path):
    result = CliRunner().invoke(train_main, ["--config", "digits-debug", "--out", str(tmp_path / "run"),
                                             "--set", "model.predictor=nope"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0
    assert "'nope'" in result.output and "transformer" in result.output


def test_internal_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import hjepa.train.loop

    def broken(*args, **kwargs):
        return {}["deep inside"]  # a bug, not a user mistake

    monkeypatch.setattr(hjepa.train.loop, "build_dataset", broken)
    result = CliRunner().invoke(train_main, ["--config", "digits-debug", "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, KeyError) and not result.output.startswith("Error: ")
    frames = [frame.name for frame in __import__("traceback").extract_tb(result.exc_info[2])]
    assert "broken" in frames  # the traceback reaches down to where the bug is
