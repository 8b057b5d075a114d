"""hjepa-import is as careful as hjepa-export: cards fetch only https:// into the cache under a plain name, checked
by size and sha256; --overwrite replaces an artifact's own files only; bad config files are one-line errors."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from click.testing import CliRunner

from hjepa.cli.importer import main as import_main
from hjepa.importers import ImportSourceError, import_encoder
from hjepa.importers.cards import download, find_card
from tests.test_importers import hf_directory, ijepa_checkpoint

CARD = {"format": "ijepa", "architecture": "vit_huge_patch14_224", "img_size": 224, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "licence": "CC-BY-NC-4.0"}


@pytest.fixture
def cards(tmp_path, monkeypatch):
    """``write(stem, **fields)``: a card in a models folder of the test's own; the cache is in tmp_path too."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("HJEPA_MODELS_DIR", str(folder))
    monkeypatch.setenv("HJEPA_CACHE", str(tmp_path / "cache"))

    def write(stem: str, **fields) -> None:
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump({**CARD, **fields}))

    return write


def serve_bytes(monkeypatch, payload: bytes) -> list[str]:
    """urlopen answers ``payload`` for any URL (no network in tests); returns the URLs asked for."""
    asked: list[str] = []

    def fake_urlopen(url, *args, **kwargs):
        asked.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    return asked


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://example.com/x.pth.tar", "ftp://example.com/x"])
def test_a_card_fetches_only_https(cards, monkeypatch, tmp_path, url):
    cards("evil", url=url)
    asked = serve_bytes(monkeypatch, b"secret")
    result = CliRunner().invoke(import_main, ["evil", "--download", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "https://" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert asked == [] and not (tmp_path / "cache").exists() and not (tmp_path / "a").exists()


def test_a_card_name_is_a_plain_name(cards, monkeypatch, tmp_path):
    cards("evil", url="https://example.com/x.pth.tar", name="../../../../tmp/x")
    asked = serve_bytes(monkeypatch, b"data")
    with pytest.raises(ImportSourceError, match="name"):
        import_encoder("evil", tmp_path / "a", download_card=True)
    assert asked == [] and not (tmp_path / "cache").exists()


def test_a_download_is_checked_by_size_and_sha256(cards, monkeypatch, tmp_path):
    import hashlib

    payload = b"x" * 1000
    cards("sized", url="https://example.com/sized.pth.tar", size=999)
    serve_bytes(monkeypatch, payload)
    with pytest.raises(ImportSourceError, match="1000 bytes"):
        download(find_card("sized"), log=lambda m: None)
    cards("hashed", url="https://example.com/hashed.pth.tar", sha256="0" * 64, size=1000)
    with pytest.raises(ImportSourceError, match="sha256"):
        download(find_card("hashed"), log=lambda m: None)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing half-checked kept
    cards("good", url="https://example.com/good.pth.tar", sha256=hashlib.sha256(payload).hexdigest(), size=1000)
    assert download(find_card("good"), log=lambda m: None).read_bytes() == payload


def test_overwrite_replaces_only_an_artifacts_own_files(tmp_path):
    source = tmp_path / "IN1K-tiny.pth.tar"
    ijepa_checkpoint(source)
    args = [str(source), "--num-heads", "4", "--out", str(tmp_path / "a")]
    assert CliRunner().invoke(import_main, args).exit_code == 0
    (tmp_path / "a" / "notes.txt").write_text("mine")
    (tmp_path / "a" / "mydata").mkdir()
    result = CliRunner().invoke(import_main, [*args, "--overwrite"])
    assert result.exit_code == 1 and "mydata" in result.output  # the first of them, named
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine" and (tmp_path / "a" / "mydata").is_dir()
    (tmp_path / "a" / "notes.txt").unlink()
    (tmp_path / "a" / "mydata").rmdir()
    assert CliRunner().invoke(import_main, [*args, "--overwrite"]).exit_code == 0


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    hf_directory(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_bytes(b'{"hidden_size": 32, "name": "\xff\xfe"}')
    result = CliRunner().invoke(import_main, [str(tmp_path / "hf"), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "UTF-8" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_head_count_from_config_json_names_it(tmp_path):
    hf_directory(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))
    with pytest.raises(ImportSourceError, match="config.json num_attention_heads 5"):
        import_encoder(tmp_path / "hf", tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_import_writes_files_with_the_users_umask(tmp_path):
    import os
    import stat

    source = tmp_path / "IN1K-tiny.pth.tar"
    ijepa_checkpoint(source)
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(import_main, [str(source), "--num-heads", "4", "--out", str(tmp_path / "a")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "a").iterdir():  # safetensors alone writes 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, f"{path.name}: {oct(path.stat().st_mode)}"
