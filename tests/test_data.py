"""Datasets read from tiny local fixtures: Fashion-MNIST idx files, digits, a CIFAR-100 pickle layout, image folders."""

from __future__ import annotations

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from hjepa.data import (
    DATASETS,
    DataError,
    ImageDataset,
    build_dataset,
    dataset_stats,
)
from hjepa.data.digits import _split_indices
from hjepa.data.fashion_mnist import DEFAULT_DIR

# ----------------------------------------------------------------------------------------------- fixtures


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """An unsigned-byte idx file: 0, 0, 0x08, ndim, big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_fashion(directory: Path, compress: bool, train: int = 6, test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def make_cifar(directory: Path, count: int = 5) -> np.ndarray:
    """``directory/cifar-100-python/{train,test,meta}``; returns the train images as [N, 32, 32, 3] RGB."""
    rng = np.random.default_rng(1)
    folder = directory / "cifar-100-python"
    folder.mkdir(parents=True)
    rgb = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    # The CIFAR row layout: all red values, then all green, then all blue.
    rows = rgb.transpose(0, 3, 1, 2).reshape(count, 3072)
    for split in ("train", "test"):
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": rows, "fine_labels": [i * 7 % 100 for i in range(count)]}, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, handle)
    return rgb


def make_folder(root: Path) -> None:
    """train/{bird,cat}/ and val/{bird,cat}/ with PNGs of different sizes and modes."""
    sizes = {"cat": [(40, 30), (20, 50)], "bird": [(33, 33), (64, 16), (25, 40)]}
    for split in ("train", "val"):
        for class_name, shapes in sizes.items():
            (root / split / class_name).mkdir(parents=True)
            for index, (width, height) in enumerate(shapes):
                mode = "L" if index == 1 else "RGB"
                color = 200 if mode == "L" else (255, 0, 0)
                Image.new(mode, (width, height), color).save(root / split / class_name / f"{index}.png")


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path: Path, compress: bool) -> None:
    arrays = make_fashion(tmp_path, compress)
    for split in ("train", "test"):
        dataset = build_dataset("fashion-mnist", split, data_dir=str(tmp_path))
        images, labels = dataset.tensors()
        assert images.dtype == torch.uint8 and images.shape == (len(arrays[f"{split}_labels"]), 1, 28, 28)
        assert torch.equal(images[:, 0], torch.from_numpy(arrays[f"{split}_images"]))
        assert labels.dtype == torch.long and labels.tolist() == arrays[f"{split}_labels"].tolist()
        image, label = dataset[3]
        assert torch.equal(image, images[3]) and label == 3
        assert dataset.num_classes == 10 and dataset.classes[9] == "Ankle boot"
        assert dataset.in_memory and dataset.image_shape == (1, 28, 28)
        assert dataset.mean == (0.286,) * 3 and dataset.std == (0.353,) * 3


def test_fashion_mnist_torchvision_layout_and_limit(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    make_fashion(raw, compress=False)
    dataset = build_dataset("fashion-mnist", "train", data_dir=str(tmp_path), limit=4)
    assert len(dataset) == 4 and dataset.tensors()[1].tolist() == [0, 1, 2, 3]


@pytest.mark.skipif(not Path(DEFAULT_DIR).is_dir(), reason=f"Fashion-MNIST is not installed at {DEFAULT_DIR}")
def test_real_fashion_mnist() -> None:
    train, test = build_dataset("fashion-mnist", "train"), build_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    images, labels = train.tensors()
    assert images.shape == (60000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [6000] * 10
    # The stored stats must describe the real data.
    assert abs(images.float().mean().item() / 255 - train.mean[0]) < 1e-3


def test_fashion_mnist_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{re.escape(str(missing))}.*not a directory"):
        build_dataset("fashion-mnist", "train", data_dir=str(missing))
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))} has no train-images-idx3-ubyte.*four idx files"):
        build_dataset("fashion-mnist", "train", data_dir=str(tmp_path))

    make_fashion(tmp_path, compress=False)
    image_file = tmp_path / "train-images-idx3-ubyte"
    good = image_file.read_bytes()
    image_file.write_bytes(bytes([0, 0, 8, 1]) + good[4:])  # labels' magic on an image file
    with pytest.raises(DataError, match=f"{re.escape(str(image_file))} has magic 00000801; expected 00000803"):
        build_dataset("fashion-mnist", "train", data_dir=str(tmp_path))
    image_file.write_bytes(good[:-10])
    with pytest.raises(DataError, match=f"{re.escape(str(image_file))} holds .* truncated"):
        build_dataset("fashion-mnist", "train", data_dir=str(tmp_path))
    image_file.write_bytes(good[:6])
    with pytest.raises(DataError, match=f"{re.escape(str(image_file))} is truncated"):
        build_dataset("fashion-mnist", "train", data_dir=str(tmp_path))
    image_file.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=f"cannot read {re.escape(str(tmp_path / 'train-images-idx3-ubyte.gz'))}"):
        build_dataset("fashion-mnist", "train", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------- digits


def test_digits_split_is_stratified_and_deterministic() -> None:
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    train_images, train_labels = train.tensors()
    assert train_images.shape == (1437, 1, 8, 8) and train_images.dtype == torch.uint8
    assert int(train_images.max()) == 255 and int(train_images.min()) == 0
    # Stratified: each class keeps about 20% of its images in the test split.
    test_counts = torch.bincount(test.tensors()[1], minlength=10)
    assert test_counts.min() >= 34 and test_counts.max() <= 38
    again_images, again_labels = build_dataset("digits", "train").tensors()
    assert torch.equal(again_images, train_images) and torch.equal(again_labels, train_labels)
    split = _split_indices(load_digits().target)
    assert set(split["train"].tolist()).isdisjoint(split["test"].tolist())
    assert len(split["train"]) + len(split["test"]) == 1797


# ----------------------------------------------------------------------------------------------- CIFAR-100


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar100_pickle_layout(tmp_path: Path, point_at_folder: bool) -> None:
    rgb = make_cifar(tmp_path)
    data_dir = tmp_path / "cifar-100-python" if point_at_folder else tmp_path
    dataset = build_dataset("cifar100", "train", data_dir=str(data_dir))
    images, labels = dataset.tensors()
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    # Channel order: channel 0 must be red, and pixel (row 3, column 5) must match the source.
    assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(rgb))
    assert images[2, 0, 3, 5].item() == rgb[2, 3, 5, 0] and images[2, 2, 3, 5].item() == rgb[2, 3, 5, 2]
    assert labels.tolist() == [0, 7, 14, 21, 28]
    assert dataset.num_classes == 100 and dataset.classes[7] == "class7"
    assert dataset.mean == dataset_stats("cifar100")[0]


def test_cifar100_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data directory given"):
        build_dataset("cifar100", "train")
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))} has no cifar-100-python"):
        build_dataset("cifar100", "train", data_dir=str(tmp_path))
    make_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'cifar-100-python'))} has no test file"):
        build_dataset("cifar100", "test", data_dir=str(tmp_path))
    # A pickle that would call an arbitrary function is refused, not executed.
    with open(tmp_path / "cifar-100-python" / "train", "wb") as handle:
        pickle.dump({"data": Path("x")}, handle)
    with pytest.raises(DataError, match="pathlib.*not allowed"):
        build_dataset("cifar100", "train", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------- image folders


@pytest.mark.parametrize("name", ["imagefolder", "imagenet100"])
def test_imagefolder_decodes_and_stacks(tmp_path: Path, name: str) -> None:
    make_folder(tmp_path)
    train = build_dataset(name, "train", data_dir=str(tmp_path), storage_size=24)
    assert not train.in_memory and train.classes == ["bird", "cat"] and len(train) == 5
    assert [label for _, label in train.samples] == [0, 0, 0, 1, 1]  # type: ignore[attr-defined]
    batch = torch.stack([train[i][0] for i in range(len(train))])
    assert batch.shape == (5, 3, 24, 24) and batch.dtype == torch.uint8
    assert batch[0, :, 12, 12].tolist() == [255, 0, 0]  # red RGB image
    assert batch[1, :, 12, 12].tolist() == [200, 200, 200]  # grayscale image converted to RGB
    assert train.mean == (0.485, 0.456, 0.406)
    with pytest.raises(DataError, match="in-memory"):
        train.tensors()

    test = build_dataset(name, "test", data_dir=str(tmp_path), storage_size=24)
    assert test.split == "test" and all(str(path).startswith(str(tmp_path / "val")) for path, _ in test.samples)  # type: ignore[attr-defined]


def test_spread_subset_of_a_folder_decodes_only_the_images_it_returns(tmp_path: Path, monkeypatch) -> None:
    """The k-NN monitor, the int8 check and the serve gallery take spread subsets: an ImageNet-sized folder must not
    be decoded whole to keep a few thousand images."""
    from hjepa.data import imagefolder
    from hjepa.inference.features.extract import spread_arrays

    make_folder(tmp_path)
    train = build_dataset("imagefolder", "train", data_dir=str(tmp_path), storage_size=24)
    decoded = []
    original = imagefolder.decode_image
    monkeypatch.setattr(imagefolder, "decode_image", lambda path, size: decoded.append(path) or original(path, size))
    images, labels = spread_arrays(train, 3)
    assert images.shape == (3, 3, 24, 24) and len(decoded) == 3
    assert labels.tolist() == [0, 0, 1]  # first, middle and last of the 5 class-sorted images: both classes
    decoded.clear()
    assert len(spread_arrays(train, None)[0]) == 5 == len(decoded)


def test_imagefolder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'x'))} is not a directory.*train,val"):
        build_dataset("imagefolder", "train", data_dir=str(tmp_path / "x"))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))} has no val/ folder"):
        build_dataset("imagefolder", "test", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'train'))} holds no images"):
        build_dataset("imagefolder", "train", data_dir=str(tmp_path))
    corrupt = tmp_path / "train" / "cat" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    dataset = build_dataset("imagefolder", "train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=f"cannot decode image {re.escape(str(corrupt))}"):
        dataset[0]


# ----------------------------------------------------------------------------------------------- registry


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'; valid names: cifar100, digits, fashion-mnist"):
        build_dataset("mnist", "train")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        build_dataset("digits", "dev")
    assert build_dataset("digits", "val").split == "test"
    assert DATASETS.names() == ["cifar100", "digits", "fashion-mnist", "imagefolder", "imagenet100"]
    for name in DATASETS.names():
        mean, std = dataset_stats(name)
        assert len(mean) == len(std) == 3 and all(s > 0 for s in std)


def test_subset_keeps_metadata() -> None:
    dataset = build_dataset("digits", "test")
    picked = dataset.subset([5, 1])
    assert isinstance(picked, ImageDataset) and len(picked) == 2 and picked.classes == dataset.classes
    assert torch.equal(picked[0][0], dataset[5][0]) and picked[1][1] == dataset[1][1]
