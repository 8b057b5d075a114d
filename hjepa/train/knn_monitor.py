"""Online k-NN monitor (like solo-learn's callback): pooled level-0 target features of held-out data, weighted k-NN."""

from __future__ import annotations

import torch

from hjepa.config import Config
from hjepa.data import EvalTransform, build_dataset
from hjepa.evaluation.features import dataset_arrays, extract_features, spread_subset
from hjepa.evaluation.knn import knn_evaluate


class KnnMonitor:
    """Embeds ``knn_train_samples`` train and ``knn_test_samples`` test images (fixed subsets) and runs k-NN."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        splits = []
        for split, count in (("train", cfg.train.knn_train_samples), ("test", cfg.train.knn_test_samples)):
            dataset = build_dataset(cfg.data.dataset, split, cfg.data.data_dir, cfg.data.download)
            images, labels = dataset_arrays(dataset)
            keep = spread_subset(count, len(images))
            splits.append((images[keep], labels[keep]))
            self.num_classes = dataset.num_classes
            self.transform = EvalTransform(cfg.model.img_size, mean=dataset.mean, std=dataset.std)
        self.train_split, self.test_split = splits

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, level: int = 0) -> dict:
        def embed(x: torch.Tensor) -> torch.Tensor:
            return model.extract_features(x, level)[1]

        feats = [
            extract_features(embed, images, labels, self.transform, self.cfg.eval.batch_size, self.device, False)
            for images, labels in (self.train_split, self.test_split)
        ]
        (train_f, train_l), (test_f, test_l) = feats
        return knn_evaluate(
            train_f, train_l, test_f, test_l, ks=self.cfg.eval.knn_k,
            temperature=self.cfg.eval.knn_temperature, num_classes=self.num_classes,
        )
