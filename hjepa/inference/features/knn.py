"""DINO's weighted k-NN (cosine top-k, votes ``exp(sim / T)``), with ties broken the same on every device."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# log(float32 max) ~ 88.7, less headroom for the sum
_FLOAT32_LOG_MAX = 88.0


def as_features(features: Tensor | np.ndarray, name: str) -> Tensor:
    """Checked float tensor [N, D] from a tensor or array."""
    tensor = torch.as_tensor(features)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_samples, dim] matrix, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if not tensor.is_floating_point():
        tensor = tensor.float()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def as_labels(labels: Tensor | np.ndarray, num_rows: int, name: str) -> Tensor:
    """Checked long tensor [N] of class indices."""
    tensor = torch.as_tensor(labels)
    if tensor.ndim != 1 or tensor.shape[0] != num_rows:
        raise ValueError(f"{name} must be a 1-D vector of {num_rows} labels, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long()
    if bool((tensor < 0).any()):
        raise ValueError(f"{name} contains negative class indices (min {int(tensor.min())})")
    return tensor


def resolve_num_classes(num_classes: int | None, *labels: Tensor) -> int:
    """Number of classes: the given one (checked against the labels) or ``max(label) + 1``."""
    largest = max(int(label.max()) for label in labels)
    if num_classes is None:
        return largest + 1
    if num_classes <= largest:
        raise ValueError(f"num_classes={num_classes} but the labels contain class index {largest}")
    return num_classes


def _clamp_k(k: int, num_train: int) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > num_train:
        warnings.warn(f"k={k} exceeds the {num_train} train features; using k={num_train}", stacklevel=3)
        return num_train
    return k


def _top_k_lowest_index_ties(similarity: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``topk`` of [B, N] ordered by (similarity desc, train index asc): values, indices [B, k]."""
    # the (k+1)-th flags a tie at the edge without a pass over [B, N]
    extended = min(k + 1, similarity.shape[1])
    values, indices = similarity.topk(extended, dim=1, largest=True, sorted=True)
    ambiguous = (values[:, k] == values[:, k - 1]).nonzero().flatten().tolist() if extended > k else []
    values, indices = values[:, :k].clone(), indices[:, :k].clone()
    # ties are rare (duplicate images): repair row by row
    for row in ambiguous:
        row_sim, edge = similarity[row], values[row, -1]
        above = (row_sim > edge).nonzero().flatten()
        tied = (row_sim == edge).nonzero().flatten()[: k - above.numel()]  # nonzero() is index-ordered
        chosen = torch.cat([above, tied])
        indices[row], values[row] = chosen, row_sim[chosen]
    # stable sort after an index sort: ties stay index-ordered
    indices, order = indices.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, order)


@torch.no_grad()
def knn_neighbours(
    train_features: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    k: int,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Similarities [M, k] and indices [M, k] of the nearest train rows [N, D] to each test row [M, D].

    Memory peaks at one [chunk_size, N] block; runs on the train features' device.
    """
    train = F.normalize(as_features(train_features, "train_features").float(), dim=1)
    test = as_features(test_features, "test_features")
    if test.shape[1] != train.shape[1]:
        raise ValueError(f"test_features have dim {test.shape[1]} but train_features have dim {train.shape[1]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    k = _clamp_k(k, train.shape[0])
    train_t = train.t().contiguous()  # [D, N]: one plain matmul per chunk
    all_values, all_indices = [], []
    for start in range(0, test.shape[0], chunk_size):
        chunk = F.normalize(test[start : start + chunk_size].to(train.device, torch.float32), dim=1)
        similarity = chunk @ train_t  # [B, N]
        values, indices = _top_k_lowest_index_ties(similarity, k)
        all_values.append(values)
        all_indices.append(indices)
    return torch.cat(all_values), torch.cat(all_indices)


def knn_scores(similarities: Tensor, neighbour_labels: Tensor, num_classes: int, temperature: float = 0.07) -> Tensor:
    """``scores[m, c] = sum_j [label_j == c] * exp(sim_j / T)``: [M, k] neighbours -> [M, C] float32.

    Below T ~0.012 rows are rescaled by ``exp(-max_sim / T)`` so float32 does not overflow; ranks are unchanged.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    exponent = similarities.float() / temperature
    if 1.0 / temperature + math.log(max(similarities.shape[1], 1)) > _FLOAT32_LOG_MAX:
        exponent = exponent - exponent[:, :1]  # sorted: column 0 is the row max
    weights = exponent.exp()
    scores = torch.zeros(similarities.shape[0], num_classes, dtype=torch.float32, device=similarities.device)
    # DINO's (one_hot * weights).sum(1) without the [M, k, C] one-hot
    return scores.scatter_add_(1, neighbour_labels, weights)


def knn_classify(
    train_features: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores [M, C] for test features [M, D] from train features [N, D] and labels [N]."""
    train = as_features(train_features, "train_features")
    labels = as_labels(train_labels, train.shape[0], "train_labels").to(train.device)
    num_classes = resolve_num_classes(num_classes, labels)
    similarities, indices = knn_neighbours(train, test_features, k, chunk_size)
    return knn_scores(similarities, labels[indices], num_classes, temperature)


def top_k_accuracy(
    scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5), candidates: Tensor | None = None
) -> dict[int, float]:
    """Percent of rows [M] whose label is in the top k of scores [M, C]; ties rank the lower class first.

    ``candidates`` [M, C] bool: only these can hit, so an unvoted class never fills a slot by its low index.
    """
    order = scores.sort(dim=1, descending=True, stable=True).indices[:, : max(ks)]
    hits = order == labels.to(scores.device).view(-1, 1)
    if candidates is not None:
        hits &= candidates.to(scores.device).gather(1, order)
    # integer counts: 20.0 must not print as 20.000000298
    return {k: 100.0 * int(hits[:, : min(k, scores.shape[1])].any(dim=1).sum()) / hits.shape[0] for k in ks}


@torch.no_grad()
def knn_evaluate(
    train_features: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    ks: list[int] | tuple[int, ...] = (20,),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[int, dict[str, float]]:
    """``{k: {"top1": %, "top5": %}}`` for each k, plus ``"k_used"`` where k was clamped to the train size.

    One search for ``max(ks)``; the tie order makes its prefixes equal separate searches. Top-5 counts voted classes.
    """
    if len(ks) == 0:
        raise ValueError("ks is empty: give at least one k")
    train = as_features(train_features, "train_features")
    test = as_features(test_features, "test_features")
    labels = as_labels(train_labels, train.shape[0], "train_labels").to(train.device)
    targets = as_labels(test_labels, test.shape[0], "test_labels").to(train.device)
    num_classes = resolve_num_classes(num_classes, labels, targets)
    similarities, indices = knn_neighbours(train, test, max(ks), chunk_size)
    neighbour_labels = labels[indices]
    results = {}
    for k in ks:
        used = min(k, similarities.shape[1])  # knn_neighbours clamped and warned
        scores = knn_scores(similarities[:, :used], neighbour_labels[:, :used], num_classes, temperature)
        # votes, not weights: weights underflow to 0 at tiny T
        voted = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, neighbour_labels[:, :used], True)
        accuracy = top_k_accuracy(scores, targets, (1, 5), candidates=voted)
        results[k] = {"top1": accuracy[1], "top5": accuracy[5]}
        if used != k:  # the row keeps the k asked for
            results[k]["k_used"] = used
    return results
