"""Dense, per-level evaluation (``hjepa-eval dense``): what each level's grid knows about where things are.

Per level k, from the level-k token grid ``[M, h_k, w_k, D]`` of frozen features:
- ``miou``: DINOv2's linear segmentation probe. A linear layer per cell, logits upsampled (bilinear) to the label
  resolution, cross-entropy per pixel; mean IoU over the classes present on the test split.
- ``tile_top1`` (mosaics only): each tile's cells averaged (area-weighted), then the linear probe of
  ``linear_probe.py``; top-1 over non-empty tiles.
Data: mosaics of Fashion-MNIST (``hjepa.data.mosaics``; probes fitted on train-split mosaics, scored on test-split
mosaics, or on a validation split carved from train with ``split="val"``) or a VOC-layout folder. docs/dense.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hjepa.data import build_dataset
from hjepa.data.mosaics import IGNORE, Mosaics, make_mosaics
from hjepa.data.segmentation import load_voc_split, num_voc_classes
from hjepa.data.splits import validation_split
from hjepa.errors import OptionError
from hjepa.evaluation.linear_probe import linear_probe
from hjepa.evaluation.sources import EvalSource

MOSAIC_DATASETS = ("fashion-mnist", "digits", "cifar100")
PROBE_LRS = (1e-3, 3e-3, 1e-2, 3e-2)  # Adam; the best on a validation split carved from the probe's train rows


@dataclass
class DenseOptions:
    """What ``evaluate_dense`` measures and on how much data."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    layouts: tuple[int, ...] = (2, 4)
    train_mosaics: int = 4000  # per layout: half of them at each layout by default
    test_mosaics: int = 1000
    split: str = "test"  # "val": score on mosaics of a validation split carved from train (choosing settings)
    seed: int = 0
    seg_epochs: int = 15
    tile_epochs: int = 30
    lrs: tuple[float, ...] = PROBE_LRS
    batch_size: int = 256
    voc_limit: int | None = None

    def __post_init__(self) -> None:
        if self.split not in ("test", "val"):
            raise OptionError(f"split must be test or val, got {self.split!r}")
        if min(self.train_mosaics, self.test_mosaics, self.seg_epochs, self.tile_epochs) < 1:
            raise OptionError("mosaic counts and epochs must be positive")
        if not self.layouts or min(self.layouts) < 1:
            raise OptionError(f"layouts must be positive tile counts per side, got {self.layouts}")


@dataclass
class DenseData:
    """Train and test parts, one :class:`Mosaics` per layout (a VOC folder is one part with layout 0)."""

    train: list[Mosaics]
    test: list[Mosaics]
    num_classes: int
    description: dict[str, Any] = field(default_factory=dict)


def load_dense_data(options: DenseOptions, canvas: int) -> DenseData:
    """Mosaics at ``canvas`` px from a labelled dataset, or a VOC-layout folder (``dataset="voc"``)."""
    if options.dataset == "voc":
        if options.data_dir is None:
            raise OptionError("--dataset voc needs --data-dir: a folder with JPEGImages/, SegmentationClass/ and "
                              "ImageSets/Segmentation/{train,val}.txt")
        train_images, train_labels = load_voc_split(options.data_dir, "train", canvas, options.voc_limit)
        test_images, test_labels = load_voc_split(options.data_dir, "test", canvas, options.voc_limit)
        classes = num_voc_classes(train_labels, test_labels)
        train = [Mosaics(train_images, train_labels, None, 0, classes)]
        test = [Mosaics(test_images, test_labels, None, 0, classes)]
        return DenseData(train, test, classes, {"kind": "voc", "folder": options.data_dir})
    if options.dataset not in MOSAIC_DATASETS:
        raise OptionError(f"dense evaluation takes {', '.join(MOSAIC_DATASETS)} (as mosaics) or voc, "
                          f"got {options.dataset!r}")
    train_set = build_dataset(options.dataset, "train", data_dir=options.data_dir)
    images, labels = train_set.tensors()
    if options.split == "val":  # probe rows from the bank part, scores from the held-out part
        bank, held_out = validation_split(images.shape[0])
        (fit_images, fit_labels), (score_images, score_labels) = (images[bank], labels[bank]), (
            images[held_out], labels[held_out])
    else:
        test_images, test_labels = build_dataset(options.dataset, "test", data_dir=options.data_dir).tensors()
        (fit_images, fit_labels), (score_images, score_labels) = (images, labels), (test_images, test_labels)
    classes = train_set.num_classes
    train, test = [], []
    for index, layout in enumerate(options.layouts):
        seed = options.seed * 1000 + index
        train.append(make_mosaics(fit_images, fit_labels, classes, options.train_mosaics // len(options.layouts),
                                  layout, canvas, seed))
        test.append(make_mosaics(score_images, score_labels, classes, options.test_mosaics // len(options.layouts),
                                 layout, canvas, seed + 500))
    description = {"kind": "mosaics", "source_dataset": options.dataset, "layouts": list(options.layouts),
                   "canvas": canvas, "empty_fraction": 0.25, "split": options.split}
    return DenseData(train, test, classes + 1, description)


# A grid extractor: uint8 images [M, C, S, S] -> {level: float32 grid [M, h_k, w_k, D]}.
GridFn = Callable[[Tensor, Sequence[int]], dict[int, Tensor]]


def source_grids(source: EvalSource, batch_size: int = 256) -> GridFn:
    """Level-k token grids of ``source`` for uint8 images, through its own preprocessing."""
    transform = source.transform()

    def grids(images: Tensor, levels: Sequence[int]) -> dict[int, Tensor]:
        parts: dict[int, list[Tensor]] = {level: [] for level in levels}
        for start in range(0, images.shape[0], batch_size):
            batch = transform(images[start : start + batch_size])
            out = source.runtime.embed_levels(batch, list(levels), with_tokens=True)
            for level, (tokens, _) in out.items():
                parts[level].append(_as_grid(torch.from_numpy(tokens)))
        return {level: torch.cat(chunks) for level, chunks in parts.items()}

    return grids


def pixel_grids(source: EvalSource) -> GridFn:
    """The raw-pixel baseline on the source's geometry: each level-k cell's preprocessed pixels, flattened and centred
    per image (as the pooled pixel baseline), as the cell's feature."""
    transform, meta = source.transform(), source.runtime.metadata

    def grids(images: Tensor, levels: Sequence[int]) -> dict[int, Tensor]:
        pixels = transform(images).float()
        pixels = pixels - pixels.mean(dim=(1, 2, 3), keepdim=True)
        out = {}
        for level in levels:
            cell = meta.patch_size * 2**level
            cells = F.unfold(pixels, kernel_size=cell, stride=cell)  # [M, 3*c*c, h*w]
            side = pixels.shape[-1] // cell
            out[level] = cells.transpose(1, 2).reshape(pixels.shape[0], side, side, -1)
        return out

    return grids


def _as_grid(tokens: Tensor) -> Tensor:
    """``[M, N, D]`` -> ``[M, h, w, D]`` for a square grid."""
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"dense evaluation needs a square token grid, got {tokens.shape[1]} tokens")
    return tokens.view(tokens.shape[0], side, side, tokens.shape[-1])


def tile_features(grid: Tensor, layout: int) -> Tensor:
    """``[M, h, w, D]`` -> ``[M, n, n, D]``: each tile's cells averaged, weighted by the area they share with it."""
    side = grid.shape[1]
    edges = torch.arange(side + 1, dtype=torch.float64) / side
    tile_edges = torch.arange(layout + 1, dtype=torch.float64) / layout
    lo = torch.maximum(tile_edges[:-1, None], edges[None, :-1])
    hi = torch.minimum(tile_edges[1:, None], edges[None, 1:])
    weights = (hi - lo).clamp_min(0) * layout  # [n, h]: share of each cell row in each tile row, rows sum to 1
    weights = weights.to(grid.dtype)
    return torch.einsum("ti,uj,mijd->mtud", weights, weights, grid)


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    flat = train.flatten(0, -2)
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def confusion(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``[M, C, S, S]`` logits and ``[M, S, S]`` labels -> ``[C, C]`` counts (rows: truth), void left out."""
    valid = labels != IGNORE
    truth, prediction = labels[valid], logits.argmax(1)[valid]
    return torch.bincount(truth * num_classes + prediction, minlength=num_classes**2).view(num_classes, num_classes)


def mean_iou(counts: Tensor) -> float:
    """Mean IoU (percent) over classes present in the truth or the prediction."""
    counts = counts.double()
    intersection = counts.diag()
    union = counts.sum(0) + counts.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean() * 100) if present.any() else 0.0


def upsample_weights(cells: int, size: int) -> Tensor:
    """``[cells, size]``: 1-D bilinear weights (``align_corners=False``, edges clamped) as ``F.interpolate`` uses;
    upsampling a grid is then two small matmuls, whose backward is far cheaper on a CPU than interpolate's."""
    eye = torch.eye(cells).unsqueeze(1)  # [cells, 1, cells]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False).squeeze(1)


class _SegmentationHeads(torch.nn.Module):
    """One linear classifier per learning rate, run together: grid ``[B, h, w, D]`` -> logits ``[L, B, C, S, S]``."""

    def __init__(self, dim: int, num_classes: int, count: int, cells: int, size: int) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(dim, num_classes) * 0.01)
                                              for _ in range(count))
        self.biases = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(num_classes)) for _ in range(count))
        self.register_buffer("up", upsample_weights(cells, size))

    def cell_logits(self, grid: Tensor, only: int | None = None) -> Tensor:
        """``[B, h, w, D]`` -> ``[L, B, h, w, C]``."""
        picked = range(len(self.weights)) if only is None else [only]
        weight = torch.stack([self.weights[i] for i in picked])  # [L, D, C]
        bias = torch.stack([self.biases[i] for i in picked])
        return torch.einsum("bijd,ldc->lbijc", grid, weight) + bias[:, None, None, None, :]

    def forward(self, grid: Tensor, only: int | None = None) -> Tensor:
        """``[B, h, w, D]`` -> pixel logits ``[L, B, C, S, S]``, bilinear from the cell centres."""
        return torch.einsum("lbijc,iy,jx->lbcyx", self.cell_logits(grid, only), self.up, self.up)


def cell_histograms(labels: Tensor, cells: int, num_classes: int) -> Tensor:
    """``[M, S, S]`` labels -> ``[M, h, w, C]`` pixel counts per class in each cell (void left out)."""
    count, size = labels.shape[0], labels.shape[-1]
    if size % cells:
        raise ValueError(f"labels of {size} px do not split into {cells} cells per side")
    side = size // cells
    valid = labels != IGNORE
    onehot = F.one_hot(labels.masked_fill(~valid, 0), num_classes) * valid.unsqueeze(-1)
    return onehot.view(count, cells, side, cells, side, num_classes).sum(dim=(2, 4)).float()


def segmentation_probe(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, options: DenseOptions
) -> dict[str, Any]:
    """Linear per-cell classifiers (one per lr, Adam), the best by validation mIoU; ``(grid [M, h, w, D], labels
    [M, S, S])`` pairs. Returns ``{"miou", "best_lr", "val_miou_per_lr", "confusion"}`` (test confusion counts)."""
    (grid, labels), (test_grid, test_labels) = train, test
    generator = torch.Generator().manual_seed(options.seed)
    order = torch.randperm(grid.shape[0], generator=generator)
    val_count = max(1, grid.shape[0] // 10)
    val_rows, fit_rows = order[:val_count], order[val_count:]
    fit, val, test_grid = _standardise(grid[fit_rows], grid[val_rows], test_grid)
    fit_labels, val_labels, size = labels[fit_rows], labels[val_rows], labels.shape[-1]
    torch.manual_seed(options.seed)
    heads = _SegmentationHeads(grid.shape[-1], num_classes, len(options.lrs), grid.shape[1], size)
    groups = [{"params": [w, b], "lr": lr} for w, b, lr in zip(heads.weights, heads.biases, options.lrs, strict=True)]
    optimiser = torch.optim.Adam(groups)
    steps = options.seg_epochs * math.ceil(fit.shape[0] / options.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    # Cell label histograms: exact pixel cross-entropy of nearest upsampling, at the cells' cost.
    # Scored below with bilinear upsampling, as DINOv2.
    histograms = cell_histograms(fit_labels, grid.shape[1], num_classes)
    for _ in range(options.seg_epochs):
        for batch in torch.randperm(fit.shape[0], generator=generator).split(options.batch_size):
            log_probs = heads.cell_logits(fit[batch]).log_softmax(-1)  # [L, B, h, w, C]
            counts = histograms[batch]
            # Summed over the heads: each head's gradient is its own loss's.
            loss = -(log_probs * counts).sum() / counts.sum().clamp_min(1)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    with torch.no_grad():
        val_scores = [mean_iou(_confusion_in_chunks(val, val_labels, heads, i, num_classes))
                      for i in range(len(options.lrs))]
        best = max(range(len(options.lrs)), key=lambda i: val_scores[i])
        counts = _confusion_in_chunks(test_grid, test_labels, heads, best, num_classes)
    return {"miou": mean_iou(counts), "best_lr": options.lrs[best],
            "val_miou_per_lr": dict(zip(options.lrs, val_scores, strict=True)), "confusion": counts}


def _confusion_in_chunks(grid: Tensor, labels: Tensor, heads: _SegmentationHeads, head: int,
                         num_classes: int) -> Tensor:
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for start in range(0, grid.shape[0], 512):
        logits = heads(grid[start : start + 512], only=head)[0]
        counts += confusion(logits, labels[start : start + 512], num_classes)
    return counts


def _level_scores(
    train_grids: list[Tensor], test_grids: list[Tensor], data: DenseData, options: DenseOptions
) -> dict[str, Any]:
    """Both probes at one level; ``*_grids[i]`` belongs to ``data.train[i]`` / ``data.test[i]``."""
    seg = segmentation_probe(
        (torch.cat(train_grids), torch.cat([part.pixel_labels for part in data.train])),
        (torch.cat(test_grids), torch.cat([part.pixel_labels for part in data.test])),
        data.num_classes, options,
    )
    scores: dict[str, Any] = {"miou": seg["miou"], "seg_best_lr": seg["best_lr"],
                              "seg_val_miou_per_lr": seg["val_miou_per_lr"], "grid": list(train_grids[0].shape[1:3])}
    if data.train[0].tile_labels is None:
        return scores
    correct = total = 0
    scores["by_layout"] = {}
    for part, test_part, grid, test_grid in zip(data.train, data.test, train_grids, test_grids, strict=True):
        train_x, train_y = _tiles(grid, part)
        test_x, test_y = _tiles(test_grid, test_part)
        probe = linear_probe(train_x, train_y, test_x, test_y, num_classes=data.num_classes - 1,
                             epochs=options.tile_epochs, batch_size=1024, seed=options.seed)
        name = f"{part.layout}x{part.layout}"
        scores["by_layout"][name] = {"tile_top1": probe["top1"], "tiles_test": int(test_y.numel())}
        correct += probe["top1"] * test_y.numel()
        total += test_y.numel()
    scores["tile_top1"] = correct / total
    return scores


def _tiles(grid: Tensor, part: Mosaics) -> tuple[Tensor, Tensor]:
    """Non-empty tiles' features ``[T, D]`` and classes ``[T]``."""
    features = tile_features(grid, part.layout).flatten(1, 2)
    labels = part.tile_labels.flatten(1)
    keep = labels >= 0
    return features[keep], labels[keep]


def dense_scores(grids: GridFn, levels: Sequence[int], data: DenseData, options: DenseOptions) -> dict[str, Any]:
    """``{"levels": {k: {"dense": scores}}, "seconds"}`` for one feature source."""
    start = time.perf_counter()
    train = [grids(part.images, levels) for part in data.train]
    test = [grids(part.images, levels) for part in data.test]
    out: dict[str, Any] = {"levels": {}}
    for level in levels:
        scores = _level_scores([part[level] for part in train], [part[level] for part in test], data, options)
        out["levels"][str(level)] = {"dense": scores}
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def evaluate_dense(
    source: EvalSource,
    options: DenseOptions,
    levels: Sequence[int] | None = None,
    baselines: Sequence[str] = (),
    random_init: Callable[[], EvalSource] | None = None,
) -> dict[str, Any]:
    """The dense report of ``source`` at ``levels`` (default all) with baseline rows (``pixels``, ``random-init``)
    on the same data and probes; ``random_init`` builds the random-init source when asked for."""
    levels = list(source.levels if levels is None else levels)
    missing = [level for level in levels if level not in source.levels]
    if missing:
        raise OptionError(f"level {missing[0]} is not in this source (levels {source.levels})")
    unknown = [name for name in baselines if name not in ("pixels", "random-init")]
    if unknown:  # checked before any features are computed
        raise OptionError(f"unknown baseline {unknown[0]!r}; valid: pixels, random-init")
    wants_random_init = "random-init" in baselines and source.kind != "random-init"
    if wants_random_init and random_init is None:
        raise OptionError("the random-init baseline needs the model's config")
    data = load_dense_data(options, source.img_size)
    report = {
        "source": source.name, "backend": source.backend, "dataset": options.dataset, "protocol": "dense",
        "data": data.description, "num_classes": data.num_classes,
        "splits": {"train": sum(len(p) for p in data.train), "test": sum(len(p) for p in data.test)},
        "options": asdict(options), **dense_scores(source_grids(source, options.batch_size), levels, data, options),
        "baselines": {},
    }
    for name in dict.fromkeys(baselines):
        if name == "pixels":
            report["baselines"][name] = dense_scores(pixel_grids(source), levels, data, options)
        elif wants_random_init:
            report["baselines"][name] = dense_scores(source_grids(random_init(), options.batch_size), levels, data,
                                                     options)
    return report


def dense_rows(report: dict[str, Any], label: str = "model") -> list[dict[str, Any]]:
    """One table row per (features, level): mIoU, tile top-1 and per-layout tile top-1."""
    rows = []
    for name, part in [(label, report), *report.get("baselines", {}).items()]:
        for level, entry in part["levels"].items():
            dense = entry["dense"]
            row = {"features": name, "level": int(level), "grid": "x".join(map(str, dense["grid"])),
                   "miou": dense["miou"], "tile_top1": dense.get("tile_top1")}
            for layout, scores in dense.get("by_layout", {}).items():
                row[f"tile_top1_{layout}"] = scores["tile_top1"]
            rows.append(row)
    return rows
