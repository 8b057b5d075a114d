"""scikit-learn's 8x8 handwritten digits: 1797 images, 10 classes, shipped inside scikit-learn so always available.

The pixel values 0..16 are rescaled to uint8 0..255 so the dataset looks like every other one. There is no official
split; a stratified 80 / 20 split with a fixed seed gives 1437 train and 360 test images, the same on every machine.
"""

from __future__ import annotations

import numpy as np
import torch

from hjepa.data.base import DATASETS, TensorImageDataset, normalise_split

CLASSES = [str(digit) for digit in range(10)]
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified train / test indices, each sorted so the stored order follows scikit-learn's."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(labels.shape[0]), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return {"train": np.sort(train), "test": np.sort(test)}


def load_digits_dataset(split: str) -> TensorImageDataset:
    """The digits ``split``: images uint8 ``[N, 1, 8, 8]`` (0..16 scaled to 0..255), labels ``[N]`` in 0..9."""
    from sklearn.datasets import load_digits

    split = normalise_split(split)
    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    index = _split_indices(labels)[split]
    images = torch.from_numpy(pixels[index]).unsqueeze(1)
    return TensorImageDataset("digits", split, images, torch.from_numpy(labels[index]), CLASSES)


@DATASETS.register("digits")
def build_digits(
    split: str, data_dir: str | None = None, download: bool = False, storage_size: int | None = None
) -> TensorImageDataset:
    del data_dir, download, storage_size  # bundled with scikit-learn, stored at its native 8x8
    return load_digits_dataset(split)
