"""``--engine ray`` on a local Ray instance (2 CPUs) gives the same rows, values and skipped files as the local
engine, and resumes by rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from embed_helpers import BROKEN, TEST_MAX_PIXELS, make_folder, read_errors, read_rows

from hjepa.embed import EmbedOptions, embed_collection

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_equals_the_local_engine(local_ray, tiny_checkpoint, tmp_path) -> None:
    root = tmp_path / "pictures"
    ids = make_folder(root, count=10)
    common = {"levels": "all", "grid": True, "shard_size": 4, "batch_size": 4, "progress": False,
              "max_pixels": TEST_MAX_PIXELS}
    local = embed_collection(EmbedOptions(str(tiny_checkpoint), str(root), str(tmp_path / "local"), workers=0,
                                          **common))
    remote = embed_collection(EmbedOptions(str(tiny_checkpoint), str(root), str(tmp_path / "ray"), engine="ray",
                                           ray_actors=1, **common))
    assert remote["rows"] == local["rows"] == len(ids) and remote["skipped"] == 3
    columns = ["level0", "level1", "level0_grid", "level1_grid"]
    expected, got = read_rows(tmp_path / "local", columns), read_rows(tmp_path / "ray", columns)
    assert sorted(got) == sorted(expected) == ids
    for item_id in ids:
        for column in columns:
            np.testing.assert_allclose(got[item_id][column], expected[item_id][column], rtol=0, atol=1e-6)
    assert read_errors(tmp_path / "ray") == read_errors(tmp_path / "local") == BROKEN
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["shards"] == 4
    rounds = sorted(p.name for p in (tmp_path / "ray").glob("ray-*"))
    assert rounds == ["ray-00000-00003"]
    # A resumed job with every shard on disk runs nothing and changes nothing.
    again = embed_collection(EmbedOptions(str(tiny_checkpoint), str(root), str(tmp_path / "ray"), engine="ray",
                                          ray_actors=1, resume=True, **common))
    assert again["shards_run"] == 0 and again["rows"] == len(ids)
