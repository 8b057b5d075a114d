"""Datasets (uint8 images + labels), batched seeded transforms and deterministic, resumable batch streams."""

from hjepa.data.base import (
    DATASET_STATS,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    ImageDataset,
    TensorImageDataset,
    dataset_stats,
)
from hjepa.data.factory import build_dataset
from hjepa.data.imagefolder import ImageFolderDataset
from hjepa.data.loader import TrainBatches, batch_generator, iterate_eval
from hjepa.data.multiview import MultiViewAugment, Views
from hjepa.data.neighbours import PixelNeighbours
from hjepa.data.scenes import SceneMaker, Scenes
from hjepa.data.transforms import EvalTransform, PretrainAugment

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataError",
    "EvalTransform",
    "ImageDataset",
    "ImageFolderDataset",
    "MultiViewAugment",
    "PixelNeighbours",
    "PretrainAugment",
    "SceneMaker",
    "Scenes",
    "Views",
    "TensorImageDataset",
    "TrainBatches",
    "batch_generator",
    "build_dataset",
    "dataset_stats",
    "iterate_eval",
]
