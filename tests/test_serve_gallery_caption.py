"""The gallery caption is one plain sentence saying what to pass, never an internal error's text."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hjepa.serve.gallery import build_gallery


@pytest.mark.parametrize("dataset", ["imagefolder", "cifar100"])
def test_a_gallery_it_cannot_build_says_what_to_pass(dataset, tmp_path):
    runtime = SimpleNamespace(metadata=SimpleNamespace(dataset=dataset))
    gallery = build_gallery(runtime, data_dir=str(tmp_path / "nothing-here"), cache_dir=tmp_path / "cache")
    assert "--gallery FOLDER" in gallery.description
    assert "(" not in gallery.description.split(":", 1)[1]  # no exception text in brackets
    assert "Error" not in gallery.description and "not available" not in gallery.description
