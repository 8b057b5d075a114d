"""``--download`` on a machine that cannot reach the dataset's host: one clear DataError, never a urllib traceback.
torchvision's downloader is replaced by a stand-in that fails as it does offline; nothing touches the network."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torchvision

from hjepa.data import DataError, build_dataset


def offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def corrupt(*args, **kwargs):
    raise RuntimeError("File not found or corrupted.")


@pytest.mark.parametrize(("name", "attribute"), [("cifar100", "CIFAR100"), ("fashion-mnist", "FashionMNIST")])
@pytest.mark.parametrize("failure", [offline, corrupt])
def test_failed_download_is_a_data_error_naming_the_folder(tmp_path: Path, monkeypatch, name, attribute, failure):
    monkeypatch.setattr(torchvision.datasets, attribute, failure)
    with pytest.raises(DataError, match=f"{name}: download into {tmp_path} failed.*--data-dir"):
        build_dataset(name, "train", data_dir=str(tmp_path), download=True)
