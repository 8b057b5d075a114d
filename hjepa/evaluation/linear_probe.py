"""Linear probes on frozen features: dinov2's learning-rate sweep as one ``[L, D, C]`` layer, and logistic regression.

The best lr is picked on a seeded stratified validation split and scored on test without retraining on train + val.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hjepa.inference.features.knn import as_features, as_labels, resolve_num_classes, top_k_accuracy

DEFAULT_PROBE_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
_MOMENTUM = 0.9


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted (train, val) row indices of labels [N]: ``round(val_fraction * N)`` val rows, by class size.

    Largest remainders, not per-class rounding, which holds out nothing when classes have under 5 rows; ties in a
    seeded order. Every class keeps a training row.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    classes, counts = labels.unique(return_counts=True)
    exact = val_fraction * counts.double()
    capacity = counts - 1  # every class keeps one training row
    quota = torch.minimum(exact.floor().long(), capacity)
    owed = min(round(val_fraction * labels.numel()), int(capacity.sum())) - int(quota.sum())
    if owed > 0:
        shuffled = torch.randperm(classes.numel(), generator=generator)
        remainder = (exact - quota.double())[shuffled]
        order = shuffled[remainder.argsort(descending=True, stable=True)]
        order = order[quota[order] < capacity[order]]
        quota[order[:owed]] += 1
    val_parts = []
    for cls, take in zip(classes.tolist(), quota.tolist(), strict=True):
        rows = (labels == cls).nonzero().flatten()
        val_parts.append(rows[torch.randperm(rows.numel(), generator=generator)][:take])
    val = torch.cat(val_parts).sort().values
    if val.numel() == 0:
        raise ValueError(
            f"the linear probe's validation split ({val_fraction:.0%} of {labels.numel()} train rows, every class "
            "keeping one training row) is empty; use more train images (--train-limit) or --classifier logreg"
        )
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val


def cosine_schedule(total_steps: int) -> Tensor:
    """``0.5 * (1 + cos(pi * t / T))`` for t in [0, T), indexed by step."""
    steps = torch.arange(total_steps, dtype=torch.float64)
    return (0.5 * (1.0 + torch.cos(math.pi * steps / total_steps))).float()


def _logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """features [B, D], weight [L, D, C], bias [L, C] -> logits [L, B, C]."""
    return torch.einsum("bd,ldc->lbc", features, weight) + bias[:, None, :]


@torch.no_grad()
def _evaluate(features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor) -> tuple[list[float], list[float]]:
    """Top-1 (%) and cross-entropy per classifier slice."""
    logits = _logits(features, weight, bias)
    accuracies = [top_k_accuracy(slice_logits, labels, (1,))[1] for slice_logits in logits]
    losses = [float(F.cross_entropy(slice_logits, labels)) for slice_logits in logits]
    return accuracies, losses


@dataclass(frozen=True)
class ProbeOptions:
    """One classifier per learning rate in ``lrs``."""

    num_classes: int | None = None  # None: from the labels
    lrs: Sequence[float] = DEFAULT_PROBE_LRS
    epochs: int = 100
    batch_size: int = 256
    val_fraction: float = 0.1
    weight_decay: float = 0.0  # weights only, not biases
    seed: int = 0
    device: str | torch.device = "cpu"


def _train_sweep(train: Tensor, labels: Tensor, num_classes: int, options: ProbeOptions,
                 device: torch.device) -> tuple[Tensor, Tensor]:
    """Every lr at once, SGD with momentum on a cosine schedule: ``weight [L, D, C], bias [L, C]``."""
    lrs, batch_size = options.lrs, options.batch_size
    # one initial draw: slice i is what a single-lr run would train
    init_generator = torch.Generator().manual_seed(options.seed)
    order_generator = torch.Generator().manual_seed(options.seed + 1)
    num_lrs, dim = len(lrs), train.shape[1]
    initial = torch.randn(dim, num_classes, generator=init_generator) * 0.01  # dinov2's N(0, 0.01), zero bias
    weight = initial.repeat(num_lrs, 1, 1).to(device).requires_grad_()
    bias = torch.zeros(num_lrs, num_classes, device=device, requires_grad=True)
    weight_momentum, bias_momentum = torch.zeros_like(weight), torch.zeros_like(bias)
    slice_lrs = torch.tensor(list(lrs), dtype=torch.float32, device=device)

    schedule = cosine_schedule(options.epochs * math.ceil(train.shape[0] / batch_size)).tolist()
    step = 0
    for _ in range(options.epochs):
        permutation = torch.randperm(train.shape[0], generator=order_generator).to(device)
        for start in range(0, train.shape[0], batch_size):
            batch = permutation[start : start + batch_size]
            # Step 1. Forward: summed per-slice means keep the slices' gradients apart
            logits = _logits(train[batch], weight, bias)  # [L, B, C]
            loss = F.cross_entropy(logits.flatten(0, 1), labels[batch].repeat(num_lrs), reduction="sum")
            loss = loss / batch.numel()
            weight.grad = bias.grad = None
            loss.backward()
            # Step 2. SGD with momentum (torch.optim.SGD's), each slice at its own lr
            with torch.no_grad():
                step_lrs = slice_lrs * schedule[step]
                weight_momentum.mul_(_MOMENTUM).add_(weight.grad + options.weight_decay * weight)
                bias_momentum.mul_(_MOMENTUM).add_(bias.grad)
                weight.sub_(step_lrs.view(-1, 1, 1) * weight_momentum)
                bias.sub_(step_lrs.view(-1, 1) * bias_momentum)
            step += 1
    return weight.detach(), bias.detach()


def linear_probe(
    train_features: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    options: ProbeOptions | None = None,
    **overrides: Any,
) -> dict:
    """Test top-1 / top-5 (%) of the best lr's classifier on features [N, D] / [M, D], standardised on train rows.

    Best: highest validation top-1, then lowest validation loss. ``overrides`` are :class:`ProbeOptions` fields.
    """
    options = dataclasses.replace(options or ProbeOptions(), **overrides)
    lrs, epochs, batch_size = options.lrs, options.epochs, options.batch_size
    if len(lrs) == 0 or any(lr <= 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive learning rates, got {list(lrs)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    train_all = as_features(train_features, "train_features").float()
    test = as_features(test_features, "test_features").float()
    if test.shape[1] != train_all.shape[1]:
        raise ValueError(f"test_features have dim {test.shape[1]} but train_features have dim {train_all.shape[1]}")
    labels_all = as_labels(train_labels, train_all.shape[0], "train_labels")
    test_targets = as_labels(test_labels, test.shape[0], "test_labels")
    num_classes = resolve_num_classes(options.num_classes, labels_all, test_targets)
    device = torch.device(options.device)

    train_rows, val_rows = stratified_split(labels_all, options.val_fraction, options.seed)
    train, val = train_all[train_rows], train_all[val_rows]
    labels, val_targets = labels_all[train_rows].to(device), labels_all[val_rows].to(device)
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)  # constant dims
    train, val, test = ((x - mean) / std for x in (train, val, test))
    train, val, test = train.to(device), val.to(device), test.to(device)
    test_targets = test_targets.to(device)

    weight, bias = _train_sweep(train, labels, num_classes, options, device)
    val_top1, val_loss = _evaluate(val, val_targets, weight, bias)
    best = max(range(len(lrs)), key=lambda i: (val_top1[i], -val_loss[i]))
    with torch.no_grad():
        test_accuracy = top_k_accuracy(_logits(test, weight[best : best + 1], bias[best : best + 1])[0], test_targets)
    return {
        "top1": test_accuracy[1],
        "top5": test_accuracy[5],
        "best_lr": float(lrs[best]),
        "val_top1_per_lr": {float(lr): acc for lr, acc in zip(lrs, val_top1, strict=True)},
        "val_loss_per_lr": {float(lr): loss for lr, loss in zip(lrs, val_loss, strict=True)},
        "train_size": int(train.shape[0]),
        "val_size": int(val.shape[0]),
        "test_size": int(test.shape[0]),
        "num_classes": num_classes,
        "epochs": epochs,
    }


def logreg_probe(
    train_features: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    C: float = 1.0,  # noqa: N803 - scikit-learn's name for the inverse regularisation strength
    max_iter: int = 1000,
) -> dict:
    """scikit-learn ``LogisticRegression`` on features [N, D] / [M, D] standardised on train; top-5 by probability."""
    from sklearn.linear_model import LogisticRegression  # slow to import

    train = as_features(train_features, "train_features").float().cpu()
    test = as_features(test_features, "test_features").float().cpu()
    if test.shape[1] != train.shape[1]:
        raise ValueError(f"test_features have dim {test.shape[1]} but train_features have dim {train.shape[1]}")
    labels = as_labels(train_labels, train.shape[0], "train_labels").cpu()
    targets = as_labels(test_labels, test.shape[0], "test_labels").cpu()
    if labels.unique().numel() < 2:
        raise ValueError("logreg_probe needs at least two classes in train_labels")
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    model = LogisticRegression(C=C, max_iter=max_iter)
    model.fit(((train - mean) / std).numpy(), labels.numpy())
    probabilities = torch.from_numpy(model.predict_proba(((test - mean) / std).numpy()))  # [M, C_seen]
    # columns follow model.classes_, not class indices
    classes = torch.from_numpy(model.classes_).long()
    order = probabilities.sort(dim=1, descending=True, stable=True).indices
    ranked = classes[order]  # [M, C_seen] class indices, most probable first
    hits = ranked == targets.view(-1, 1)
    return {
        "top1": 100.0 * int(hits[:, :1].any(dim=1).sum()) / hits.shape[0],
        "top5": 100.0 * int(hits[:, :5].any(dim=1).sum()) / hits.shape[0],
        "C": float(C),
        "train_size": int(train.shape[0]),
        "test_size": int(test.shape[0]),
    }
