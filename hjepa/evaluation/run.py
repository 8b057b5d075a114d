"""``evaluate``: k-NN and linear probes of a source's pooled level-k features on a dataset, as one report.

Step by step: resolve the source (checkpoint, export, engine or random init), check the requested levels exist,
load the train / test splits (optionally an evenly spread subset), then per level extract (or load from the cache)
the pooled features of both splits and run the protocols. Features are cached under ``cache_dir`` keyed by the
source's weight hash, level, dataset, split and everything else that changes them (a fingerprint of the split's
images and labels, limits, dataset size, image size, normalisation, back-end), so a second run with other k or
probe settings skips the encoder entirely.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hjepa.config import EvalConfig
from hjepa.data import DataError, ImageDataset, build_dataset, iterate_eval
from hjepa.device import resolve_device
from hjepa.evaluation.linear_probe import linear_probe, logreg_probe
from hjepa.evaluation.report import build_report, check_report_path, write_report
from hjepa.evaluation.sources import EvalSource, resolve_source
from hjepa.inference.cache import FeatureCache
from hjepa.inference.features import spread_subset
from hjepa.inference.knn import knn_evaluate

PROTOCOLS = ("knn", "linear")
CLASSIFIERS = ("sgd", "logreg")
DEFAULT_CACHE_DIR = ".cache/features"
SPLITS = ("train", "test")


def parse_levels(levels: str | int | Sequence[int], source: EvalSource) -> list[int]:
    """``"all"`` -> every level of the source; an int, ``"1"``, ``"0,2"`` or a list -> those levels, each checked."""
    if isinstance(levels, str):
        text = levels.strip().lower()
        if text == "all":
            return list(source.levels)
        try:
            levels = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"level {levels!r} is not an integer, a comma-separated list or 'all'") from None
    elif isinstance(levels, int):
        levels = [levels]
    picked = [source.check_level(level) for level in levels]
    if not picked:
        raise ValueError("no level given: pass a level number or 'all'")
    return list(dict.fromkeys(picked))  # keep the order, drop repeats


def load_split(
    dataset: str, split: str, data_dir: str | None, download: bool, limit: int | None
) -> tuple[ImageDataset, int]:
    """The split (an evenly spread subset of ``limit`` images when given, so every class of a class-sorted folder
    stays in) and the split's full size."""
    data = build_dataset(dataset, split, data_dir, download)
    full_size = len(data)
    if limit is not None:
        if limit <= 0:
            raise DataError(f"--{split}-limit must be positive, got {limit}")
        if limit < full_size:
            data = data.subset(spread_subset(limit, full_size))
    if len(data) == 0:
        raise DataError(f"{dataset} ({split}) holds no images")
    return data, full_size


@torch.no_grad()
def extract_pooled(
    source: EvalSource, data: ImageDataset, levels: Sequence[int], batch_size: int, progress: bool = True,
    desc: str = "",
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Every image of ``data`` -> per level ``(pooled features float32 [N, D], labels long [N])``, on the CPU.

    One encoder pass serves every level in ``levels`` (pooled vectors only: no token map reaches the host). Streams
    batches (image folders are decoded batch by batch, never held whole) through the source's transform.
    """
    levels = list(levels)
    transform = source.transform()
    features: dict[int, list[torch.Tensor]] = {k: [] for k in levels}
    labels = []
    total = math.ceil(len(data) / batch_size)
    for images, batch_labels in tqdm(iterate_eval(data, batch_size), total=total, desc=desc, disable=not progress,
                                     leave=False):
        for k, pooled in source.embed_pooled_levels(transform(images), levels).items():
            features[k].append(pooled)
        labels.append(batch_labels.long().cpu())
    all_labels = torch.cat(labels)
    return {k: (torch.cat(chunks), all_labels) for k, chunks in features.items()}


def _cache_extra(
    source: EvalSource, data: ImageDataset, data_dir: str | None, full_size: int, limit: int | None
) -> str:
    """Everything besides (weights, level, dataset, split) that changes the features, as a stable string. That
    includes a fingerprint of the images and labels themselves, so data edited in place is re-encoded."""
    meta = source.runtime.metadata
    fields = {
        "data": data.fingerprint(),
        "img_size": meta.img_size,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "precision": meta.precision,
        # The family only: torch on CPU and on CUDA compute the same features, onnxruntime / TensorRT may not.
        "backend": source.backend.split("[")[0],
        "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        "full_size": full_size,
        "limit": limit,
    }
    return json.dumps(fields, sort_keys=True)


def split_features(
    source: EvalSource,
    data: ImageDataset,
    dataset: str,
    split: str,
    levels: Sequence[int],
    cache: FeatureCache | None,
    extra: str,
    batch_size: int,
    progress: bool = True,
) -> dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """Features and labels of one split at every level in ``levels``: from the cache where it holds them, the rest
    from ONE encoder pass over the split.

    Returns ``{level: (features [N, D], labels [N], info)}`` with ``info = {"cache": "hit" | "miss" | "off",
    "seconds", "file", "count", "dim"}`` for the report; the seconds of a shared pass are split evenly between the
    levels it computed.
    """
    out: dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = {}
    keys = {level: cache.key(source.source_hash, level, dataset, split, extra) for level in levels} if cache else {}
    missing = []
    for level in levels:
        tic = time.perf_counter()
        cached = cache.load(keys[level]) if cache is not None else None
        if cached is None:
            missing.append(level)
            continue
        info = {"cache": "hit", "seconds": time.perf_counter() - tic, "file": str(cache.path(keys[level]))}
        out[level] = (*cached, info)
    if missing:
        tic = time.perf_counter()
        names = ",".join(str(level) for level in missing)
        computed = extract_pooled(source, data, missing, batch_size, progress, f"level {names} {split}")
        seconds = (time.perf_counter() - tic) / len(missing)
        for level, (features, labels) in computed.items():
            file = None
            if cache is not None:
                file = str(cache.store(keys[level], features, labels))
            info = {"cache": "miss" if cache is not None else "off", "seconds": seconds, "file": file}
            out[level] = (features, labels, info)
    for features, _, info in out.values():
        info.update(count=int(features.shape[0]), dim=int(features.shape[1]))
    return {level: out[level] for level in levels}


def evaluate(
    source: str | Path | EvalSource | None,
    dataset: str,
    data_dir: str | None = None,
    levels: str | int | Sequence[int] = "all",
    protocols: Sequence[str] = PROTOCOLS,
    out: str | Path | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    ks: Sequence[int] | None = None,
    temperature: float | None = None,
    classifier: str = "sgd",
    train_limit: int | None = None,
    test_limit: int | None = None,
    batch_size: int | None = None,
    probe_epochs: int | None = None,
    download: bool = False,
    random_init: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``source`` (a path or :class:`EvalSource`; or ``random_init=CONFIG``) on ``dataset``; returns the
    report dict (see ``hjepa.evaluation.report``) and writes it to ``out`` as JSON when given.

    ``protocols``: any of ``knn`` (weighted k-NN for each k in ``ks``, temperature ``temperature``) and ``linear``
    (``classifier="sgd"``: the learning-rate sweep of ``linear_probe``; ``"logreg"``: scikit-learn logistic
    regression). Settings not given come from :class:`EvalConfig` defaults, the same for every source, so rows of
    different models are comparable. ``cache_dir=None`` disables the feature cache.
    """
    started = time.perf_counter()
    protocols = tuple(protocols)
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown or not protocols:
        raise ValueError(f"unknown protocol {unknown[0] if unknown else None!r}; valid: {', '.join(PROTOCOLS)}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    settings = EvalConfig()
    ks = [int(k) for k in (settings.knn_k if ks is None else ks)]
    temperature = settings.knn_temperature if temperature is None else float(temperature)
    batch_size = settings.batch_size if batch_size is None else int(batch_size)
    probe_epochs = settings.probe_epochs if probe_epochs is None else int(probe_epochs)
    if not ks or batch_size <= 0 or probe_epochs <= 0 or min(ks) <= 0 or temperature <= 0:
        raise ValueError("batch size, probe epochs, every k and the temperature must be positive")
    if out is not None:
        check_report_path(out)  # a report that cannot be written fails now, not after the features are computed
    timings: dict[str, float] = {}

    # Step 1. The model and its levels (fails fast on a bad path or level, before any data is read).
    tic = time.perf_counter()
    if not isinstance(source, EvalSource):
        source = resolve_source(source, random_init=random_init, backend=backend, device=device)
    chosen_levels = parse_levels(levels, source)
    timings["load_s"] = time.perf_counter() - tic

    # Step 2. The data: uint8 images, preprocessed later with the source's own size and normalisation.
    tic = time.perf_counter()
    limits = {"train": train_limit, "test": test_limit}
    splits = {split: load_split(dataset, split, data_dir, download, limits[split]) for split in SPLITS}
    num_classes = splits["train"][0].num_classes
    timings["data_s"] = time.perf_counter() - tic

    # Step 3. Per level: features of both splits (cache or encoder), then each protocol.
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    probe_device = resolve_device("auto")
    feature_info: dict[int, dict[str, dict[str, Any]]] = {}
    results: dict[int, dict[str, Any]] = {}
    for name in ("extract_s", "knn_s", "linear_s"):
        timings[name] = 0.0
    extras = {split: _cache_extra(source, data, data_dir, full_size, limits[split]) if cache is not None else ""
              for split, (data, full_size) in splits.items()}  # computed once: it reads every pixel or file stat
    per_split = {split: split_features(source, data, dataset, split, chosen_levels, cache, extras[split], batch_size,
                                       progress)
                 for split, (data, _) in splits.items()}  # one encoder pass per split serves every level
    for level in chosen_levels:
        arrays, feature_info[level] = {}, {}
        for split in splits:
            features, labels, info = per_split[split][level]
            timings["extract_s"] += info["seconds"]
            arrays[split], feature_info[level][split] = (features, labels), info

        (train_features, train_labels), (test_features, test_labels) = arrays["train"], arrays["test"]
        results[level] = {}
        if "knn" in protocols:
            tic = time.perf_counter()
            results[level]["knn"] = knn_evaluate(train_features, train_labels, test_features, test_labels, ks=ks,
                                                 temperature=temperature, num_classes=num_classes)
            timings["knn_s"] += time.perf_counter() - tic
        if "linear" in protocols:
            tic = time.perf_counter()
            if classifier == "sgd":
                results[level]["linear"] = linear_probe(
                    train_features, train_labels, test_features, test_labels, num_classes=num_classes,
                    lrs=settings.probe_lrs, epochs=probe_epochs, val_fraction=settings.probe_val_fraction,
                    device=probe_device,
                )
            else:
                results[level]["logreg"] = logreg_probe(train_features, train_labels, test_features, test_labels)
            timings["linear_s"] += time.perf_counter() - tic
    timings["total_s"] = time.perf_counter() - started

    protocol = {"protocols": list(protocols), "levels": chosen_levels, "knn_k": ks, "knn_temperature": temperature,
                "classifier": classifier, "batch_size": batch_size}
    if "linear" in protocols and classifier == "sgd":
        protocol.update(probe_epochs=probe_epochs, probe_lrs=list(settings.probe_lrs),
                        probe_val_fraction=settings.probe_val_fraction)
    report = build_report(
        source.name,
        dataset,
        {split: len(data) for split, (data, _) in splits.items()},
        results,
        timings,
        **source.describe(),
        dataset_sizes={split: full_size for split, (_, full_size) in splits.items()},
        limits=limits,
        num_classes=num_classes,
        protocol=protocol,
        features=feature_info,
    )
    if out is not None:
        write_report(out, report)
    return report
