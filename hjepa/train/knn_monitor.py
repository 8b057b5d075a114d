"""Online k-NN monitor (like solo-learn's callback): pooled target features of held-out data, weighted k-NN."""

from __future__ import annotations

import torch

from hjepa.config import Config, ConfigError
from hjepa.data import EvalTransform, build_dataset
from hjepa.data.splits import validation_split
from hjepa.inference.features.extract import extract_features, spread_arrays
from hjepa.inference.features.knn import knn_evaluate


class KnnMonitor:
    """Embeds fixed subsets of the train split (the memory bank) and the test split, then runs weighted k-NN.
    With ``train.knn_split: val`` the queries come from a validation split carved from train (``validation_split``)
    and the bank from the rest of train, for choosing settings without touching the test split.

    ``train_samples`` / ``test_samples``: images taken evenly from each split; ``None`` takes the whole split.
    """

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        train_samples: int | None,
        test_samples: int | None,
        progress: bool = False,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.progress = progress
        if cfg.train.knn_split not in ("test", "val"):
            raise ConfigError(f"train.knn_split must be 'test' or 'val', got {cfg.train.knn_split!r}")
        train = build_dataset(cfg.data.dataset, "train", cfg.data.data_dir, cfg.data.download)
        if cfg.train.knn_split == "val":  # choosing settings: bank and queries both from the train split
            bank_idx, val_idx = validation_split(len(train))
            held_out, train = train.subset(val_idx), train.subset(bank_idx)
        else:
            held_out = build_dataset(cfg.data.dataset, "test", cfg.data.data_dir, cfg.data.download)
        # A folder dataset decodes only the spread subset.
        self.train_split, self.test_split = spread_arrays(train, train_samples), spread_arrays(held_out, test_samples)
        self.num_classes = train.num_classes
        self.transform = EvalTransform(cfg.model.img_size, mean=train.mean, std=train.std)

    @property
    def sizes(self) -> tuple[int, int]:
        """(memory bank size, test size)."""
        return len(self.train_split[0]), len(self.test_split[0])

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, level: int = 0) -> dict:
        """``{k: {'top1', 'top5'}}`` for the k values of ``cfg.eval.knn_k``."""

        def embed(x: torch.Tensor) -> torch.Tensor:
            return model.extract_features(x, level)[1]

        (train_f, train_l), (test_f, test_l) = [
            extract_features(
                embed, images, labels, self.transform, self.cfg.eval.batch_size, self.device, self.progress,
                desc=f"k-NN {name}",
            )
            for name, (images, labels) in (("train", self.train_split), ("test", self.test_split))
        ]
        return knn_evaluate(
            train_f, train_l, test_f, test_l, ks=self.cfg.eval.knn_k,
            temperature=self.cfg.eval.knn_temperature, num_classes=self.num_classes,
        )
