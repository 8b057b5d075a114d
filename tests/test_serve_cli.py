"""``hjepa-serve`` mistakes a user makes at start-up: each is one ``Error:`` line and exit status 1, no traceback."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from hjepa.cli.serve import main


def test_port_in_use_is_one_line(tiny_checkpoint) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        args = [str(tiny_checkpoint), "--no-gallery", "--device", "cpu", "--port", str(port)]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    model_line, error = result.output.strip().split("\n")
    assert model_line.startswith("model: torch[cpu]")
    assert error.startswith("Error: cannot serve on ") and f"127.0.0.1:{port}" in error and "--port" in error


# "gpu" is given an id without the word: the conftest skips tests whose keywords hold "gpu" on CPU machines.
@pytest.mark.parametrize("device", [pytest.param("gpu", id="graphics-card"), "cuda:x", "mps"])
def test_unknown_device_is_refused_for_every_source(tiny_checkpoint, tmp_path, device) -> None:
    from hjepa.export import export

    export(tiny_checkpoint, 0, tmp_path / "exp")
    for source in (tiny_checkpoint, tmp_path / "exp", tmp_path / "exp" / "level0.onnx"):
        result = CliRunner().invoke(main, [str(source), "--no-gallery", "--device", device, "--port", "1"])
        assert result.exit_code == 1, (source, result.output)
        assert result.output.startswith("Error: ") and repr(device) in result.output, (source, result.output)
        assert "auto, cpu, cuda or cuda:N" in result.output


def test_gallery_path_that_is_not_a_folder_is_named_as_such(tiny_checkpoint, tmp_path) -> None:
    (tmp_path / "photo.png").write_bytes(b"not a folder")
    for gallery in (tmp_path / "typo", tmp_path / "photo.png"):
        args = [str(tiny_checkpoint), "--gallery", str(gallery), "--device", "cpu", "--port", "1"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        error = result.output.strip().split("\n")[-1]
        assert error.startswith(f"Error: gallery {gallery} ") and "a folder of images or a dataset name" in error, error
        assert "unknown dataset" not in error
