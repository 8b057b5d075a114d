"""The feature cache follows the data: a split whose images or labels changed (same count, same path) is re-encoded,
never answered with the features and labels of what the folder held before."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from hjepa.data import build_dataset
from hjepa.evaluation.run import evaluate


def make_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for index, class_name in enumerate(("ant", "bee")):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((20, 20, 3)) * 80 + 120 * index).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def run(checkpoint: Path, dataset: str, data_dir: Path, cache: Path) -> dict:
    return evaluate(checkpoint, dataset, data_dir=str(data_dir), levels=0, protocols=("knn",), ks=[3],
                    cache_dir=cache, progress=False)


def test_moving_an_image_to_another_class_is_a_cache_miss(tiny_checkpoint, tmp_path):
    make_folder(tmp_path / "data")
    first = run(tiny_checkpoint, "imagefolder", tmp_path / "data", tmp_path / "cache")
    assert first["features"]["0"]["train"]["cache"] == "miss"
    # Fix a "mislabelled" image: same number of images, same folder, but one label changes.
    shutil.move(tmp_path / "data" / "train" / "ant" / "0.png", tmp_path / "data" / "train" / "bee" / "9.png")
    second = run(tiny_checkpoint, "imagefolder", tmp_path / "data", tmp_path / "cache")
    assert second["features"]["0"]["train"]["cache"] == "miss"
    assert second["features"]["0"]["test"]["cache"] == "hit"  # val/ did not change
    cached = load_file(second["features"]["0"]["train"]["file"])
    assert torch.equal(cached["labels"], build_dataset("imagefolder", "train", str(tmp_path / "data")).labels)


def test_rewritten_cifar_pixels_are_a_cache_miss(tiny_checkpoint, tmp_path):
    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def write(seed_shift: int) -> None:
        for split in ("train", "test"):
            rows = np.roll(rng.integers(0, 256, size=(6, 3072), dtype=np.uint8), seed_shift, axis=1)
            with open(folder / split, "wb") as handle:
                pickle.dump({"data": rows, "fine_labels": [0, 1, 2, 0, 1, 2]}, handle, protocol=2)
        with open(folder / "meta", "wb") as handle:
            pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, handle)

    write(0)
    assert run(tiny_checkpoint, "cifar100", tmp_path / "cifar", tmp_path / "cache")["features"]["0"]["train"][
        "cache"] == "miss"
    assert run(tiny_checkpoint, "cifar100", tmp_path / "cifar", tmp_path / "cache")["features"]["0"]["train"][
        "cache"] == "hit"
    write(1)  # new pixels, same count, same place
    assert run(tiny_checkpoint, "cifar100", tmp_path / "cifar", tmp_path / "cache")["features"]["0"]["train"][
        "cache"] == "miss"
