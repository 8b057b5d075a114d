"""Neighbour views (``data.neighbour_views``): the second global view cut from the image's raw-pixel neighbour."""

from __future__ import annotations

import pytest
import torch
from train_helpers import assert_resume_is_exact

from hjepa.config import ConfigError, load_config
from hjepa.data import MultiViewAugment, PixelNeighbours
from hjepa.data.neighbours import pixel_vectors


def _images(count: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_the_neighbour_is_the_nearest_in_centred_pixel_cosine_and_never_the_image_itself():
    images = _images()
    images[10] = images[3] // 2 + 7  # a scaled, shifted copy: cosine 1 after centring, so image 3's neighbour is 10
    finder = PixelNeighbours(images, share=1.0, pool=10_000)  # the pool covers every image with high probability
    indices = torch.arange(len(images))
    found = finder.neighbours(indices, torch.Generator().manual_seed(0))
    assert found[3] == 10 and found[10] == 3
    assert bool((found != indices).all())
    # brute force: over the images that were in the pool, the chosen one has the highest cosine
    flat = images.reshape(len(images), -1).numpy().astype("float64")
    flat -= flat.mean(1, keepdims=True)
    flat /= (flat ** 2).sum(1, keepdims=True) ** 0.5
    cosine = flat @ flat.T
    pool = torch.randint(0, len(images), (len(images),), generator=torch.Generator().manual_seed(0))
    for i in range(len(images)):
        candidates = [int(j) for j in set(pool.tolist()) if j != i]
        assert cosine[i, int(found[i])] == pytest.approx(max(cosine[i, j] for j in candidates))
    assert torch.allclose(pixel_vectors(images[:4]).norm(dim=1), torch.ones(4))


def test_share_swaps_that_part_of_the_batch_and_is_reproducible():
    images = _images()
    batch_idx = torch.arange(16, 48)
    batch = images[batch_idx]
    finder = PixelNeighbours(images, share=0.5, pool=32)
    first = finder(batch, batch_idx, torch.Generator().manual_seed(5))
    again = finder(batch, batch_idx, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    changed = (first != batch).flatten(1).any(1)
    assert 0 < int(changed.sum()) < len(batch)
    everything = PixelNeighbours(images, share=1.0, pool=32)(batch, batch_idx, torch.Generator().manual_seed(5))
    assert bool((everything != batch).flatten(1).any(1).all())


def test_the_second_global_view_is_cut_from_the_neighbours():
    images, other = _images(4, seed=1), _images(4, seed=2)
    augment = MultiViewAugment(8, num_global=2, crop_scale=(1.0, 1.0), hflip=False,
                               normalisation=((0.5,) * 3, (0.5,) * 3))
    plain = augment(images, torch.Generator().manual_seed(0))
    mixed = augment(images, torch.Generator().manual_seed(0), second=other)
    assert torch.equal(plain.globals_[0], mixed.globals_[0])
    assert not torch.equal(plain.globals_[1], mixed.globals_[1])
    assert torch.equal(mixed.globals_[1], augment(other, torch.Generator().manual_seed(0)).globals_[1])


@pytest.mark.parametrize("overrides, message", [
    (["model.objective=masked", "data.neighbour_views=0.5"], "objective=multiview"),
    (["data.neighbour_views=1.5"], "neighbour_views"),
    (["data.neighbour_pool=1"], "neighbour_pool"),
])
def test_bad_neighbour_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("fashion-mnist", overrides)


def test_training_with_neighbour_views_runs_and_resumes_exactly(tmp_path):
    from hjepa.train import train
    from hjepa.train.checkpoint import load_checkpoint

    def config(out, share=0.5):
        return load_config("digits-debug", [
            "model.objective=multiview", "loss.regularizer=vicreg", "loss.regularizer_weight=[0.05]",
            f"data.neighbour_views={share}", "data.neighbour_pool=64", "train.steps=4",
            "train.checkpoint_every=2", "train.knn_every=0", f"train.out_dir={out}", "train.progress=false",
        ])

    a = assert_resume_is_exact(tmp_path, config)
    train(config(tmp_path / "c", share=0))  # the same run without neighbour views learns something else
    c = load_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_lazily_decoded_dataset_is_refused_before_the_run_folder_is_touched(tmp_path):
    from PIL import Image

    from hjepa.train import train

    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for index in range(4):
                Image.new("RGB", (16, 16), (index * 60, 0, 0)).save(tmp_path / "data" / split / name / f"{index}.png")
    cfg = load_config("digits-debug", [
        "data.dataset=imagefolder", f"data.data_dir={tmp_path / 'data'}", "data.batch_size=4", "model.img_size=16",
        "model.objective=multiview", "loss.regularizer=vicreg", "loss.regularizer_weight=[0.05]",
        "data.neighbour_views=0.5", f"train.out_dir={tmp_path / 'run'}", "train.knn_every=0",
    ])
    with pytest.raises(ConfigError, match="needs an in-memory dataset; imagefolder decodes images lazily"):
        train(cfg)
    assert not (tmp_path / "run").exists()
