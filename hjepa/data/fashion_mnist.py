"""Fashion-MNIST from its four idx files (gzip-compressed or raw): 28x28 grayscale, 10 classes, 60000 / 10000.

The default directory is where Debian's ``dataset-fashion-mnist`` package installs the files, so the embedded default
dataset needs no download. torchvision's layout (``ROOT/FashionMNIST/raw``) is accepted too, and ``download=True``
fetches into it through torchvision when the files are missing.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from hjepa.data.base import (
    DATA_DIR_HINT,
    DATASETS,
    DataError,
    TensorImageDataset,
    normalise_split,
    torchvision_download,
)

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

LAYOUT_HINT = (
    "expected the four idx files of Fashion-MNIST, .gz or raw "
    f"(install Debian's dataset-fashion-mnist, or give the folder: {DATA_DIR_HINT})"
)

_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one Fashion-MNIST uses


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file (``.gz`` or raw) with ``ndim`` dimensions into a uint8 array.

    Layout: two zero bytes, the type code (0x08), the number of dimensions, then one big-endian int32 per dimension
    and the values in C order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip raises these for a truncated or non-gzip file
        raise DataError(f"fashion-mnist: cannot read {path}: {error}") from error
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"fashion-mnist: {path} is truncated ({len(raw)} bytes, shorter than its idx header)")
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0 or magic[2] != _UBYTE or magic[3] != ndim:
        raise DataError(
            f"fashion-mnist: {path} has magic {magic.hex()}; expected 000008{ndim:02x} "
            f"(an unsigned-byte idx file with {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise DataError(
            f"fashion-mnist: {path} holds {len(raw) - header_size} values after its header but the header "
            f"declares shape {shape} ({expected} values); the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _locate(root: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` under ``root`` or its torchvision ``FashionMNIST/raw`` folder."""
    image_stem, label_stem = FILES[split]
    for directory in (root, root / "FashionMNIST" / "raw"):
        images, labels = _find(directory, image_stem), _find(directory, label_stem)
        if images is not None and labels is not None:
            return images, labels
    return None


def load_fashion_mnist(split: str, data_dir: str | None = None, download: bool = False) -> TensorImageDataset:
    """Fashion-MNIST ``split`` as an in-memory dataset: images uint8 ``[N, 1, 28, 28]``, labels ``[N]`` in 0..9."""
    split = normalise_split(split)
    root = Path(data_dir or DEFAULT_DIR).expanduser()
    found = _locate(root, split)
    if found is None and download:
        torchvision_download("fashion-mnist", "FashionMNIST", root, split,
                             "install Debian's dataset-fashion-mnist or copy the four idx files there")
        found = _locate(root, split)
    if found is None:
        if not root.is_dir():
            raise DataError(f"fashion-mnist: {root} is not a directory; {LAYOUT_HINT}")
        missing = FILES[split][0] if _find(root, FILES[split][0]) is None else FILES[split][1]
        raise DataError(f"fashion-mnist: {root} has no {missing}(.gz); {LAYOUT_HINT}")
    image_path, label_path = found
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"fashion-mnist: {image_path} has {images.shape[0]} images but {label_path} has {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise DataError(f"fashion-mnist: {label_path} has label {int(labels.max())}; expected 0..{len(CLASSES) - 1}")
    # np.frombuffer views are read-only; copy once so the tensor owns writable memory.
    image_tensor = torch.from_numpy(images.copy()).unsqueeze(1)
    label_tensor = torch.from_numpy(labels.astype(np.int64))
    return TensorImageDataset("fashion-mnist", split, image_tensor, label_tensor, CLASSES)


@DATASETS.register("fashion-mnist")
def build_fashion_mnist(
    split: str, data_dir: str | None = None, download: bool = False, storage_size: int | None = None
) -> TensorImageDataset:
    del storage_size  # stored at its native 28x28
    return load_fashion_mnist(split, data_dir, download)
