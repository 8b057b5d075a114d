"""CIFAR-100 in the python-pickle layout torchvision downloads: ``DATA_DIR/cifar-100-python/{train,test,meta}``.

``DATA_DIR`` may also be the ``cifar-100-python`` folder itself. Nothing is downloaded unless ``download=True``,
which hands the job to ``torchvision.datasets.CIFAR100``. Each row of ``data`` is 3072 bytes: the 1024 red values,
then green, then blue, each a 32x32 image in row-major order, so a reshape to ``[N, 3, 32, 32]`` is exact.

The files are pickles. They are read with an unpickler that only accepts the handful of numpy and codec globals
that an array needs, so a tampered file cannot run code when it is loaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hjepa.data.base import (
    DATA_DIR_HINT,
    DATASETS,
    DOWNLOAD_HINT,
    DataError,
    TensorImageDataset,
    normalise_split,
    torchvision_download,
)

FOLDER = "cifar-100-python"
LAYOUT_HINT = f"expected DATA_DIR/{FOLDER}/{{train,test,meta}} as torchvision downloads it (or: {DOWNLOAD_HINT})"

# The globals a pickled numpy array refers to, across numpy 1.x / 2.x and pickle protocols 2..5.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-100 file")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with ``str`` keys (``latin1`` decodes the Python 2 strings in the original files)."""
    try:
        with open(path, "rb") as handle:
            content = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError) as error:
        raise DataError(f"cifar100: cannot read {path}: {error}") from error
    if not isinstance(content, dict):
        raise DataError(f"cifar100: {path} holds a {type(content).__name__}, expected a dict; {LAYOUT_HINT}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def find_root(data_dir: str | Path) -> Path | None:
    """The ``cifar-100-python`` folder under (or at) ``data_dir``, or None."""
    base = Path(data_dir).expanduser()
    for candidate in (base / FOLDER, base):
        if (candidate / "meta").is_file() and ((candidate / "train").is_file() or (candidate / "test").is_file()):
            return candidate
    return None


def load_cifar100(split: str, data_dir: str | None = None, download: bool = False) -> TensorImageDataset:
    """CIFAR-100 ``split``: images uint8 ``[N, 3, 32, 32]`` (RGB), fine labels ``[N]`` in 0..99."""
    split = normalise_split(split)
    if data_dir is None:
        if not download:
            raise DataError(f"cifar100: no data directory given ({DATA_DIR_HINT}); {LAYOUT_HINT}")
        data_dir = "data"
    root = find_root(data_dir)
    if (root is None or not (root / split).is_file()) and download:
        torchvision_download("cifar100", "CIFAR100", data_dir, split,
                             "fetch cifar-100-python.tar.gz elsewhere, unpack it there")
        root = find_root(data_dir)
    if root is None:
        raise DataError(f"cifar100: {Path(data_dir).expanduser()} has no {FOLDER} with meta and {split}; {LAYOUT_HINT}")
    if not (root / split).is_file():
        raise DataError(f"cifar100: {root} has no {split} file; {LAYOUT_HINT}")

    batch = read_pickle(root / split)
    meta = read_pickle(root / "meta")
    for content, path, key in (
        (batch, split, "data"),
        (batch, split, "fine_labels"),
        (meta, "meta", "fine_label_names"),
    ):
        if key not in content:
            raise DataError(f"cifar100: {root / path} has no {key!r} entry; {LAYOUT_HINT}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"cifar100: {root / split} 'data' is {data.dtype} {data.shape}; expected uint8 [N, 3072] (RGB planes)"
        )
    labels = np.asarray(batch["fine_labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"cifar100: {root / split} has {data.shape[0]} images but {labels.shape[0]} fine labels")
    classes = [str(name) for name in meta["fine_label_names"]]
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return TensorImageDataset("cifar100", split, images, torch.from_numpy(labels), classes)


@DATASETS.register("cifar100")
def build_cifar100(
    split: str, data_dir: str | None = None, download: bool = False, storage_size: int | None = None
) -> TensorImageDataset:
    del storage_size  # stored at its native 32x32
    return load_cifar100(split, data_dir, download)
