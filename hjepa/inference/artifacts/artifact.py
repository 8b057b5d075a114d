"""The encoder artifact: ``encoder.safetensors`` and the ``encoder.json`` that travels with it, as timm's
``pretrained_cfg`` (layout: docs/internals.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import hjepa
from hjepa.config import Config, ConfigError
from hjepa.data import DATASET_STATS, dataset_stats
from hjepa.files import atomic_path, atomic_write_text
from hjepa.inference.artifacts.checkpoint import (
    CheckpointError,
    check_state,
    checkpoint_config,
    checkpoint_file,
    inference_state,
    load_checkpoint,
)
from hjepa.inference.artifacts.hashing import file_sha256
from hjepa.models import build_model
from hjepa.models.pretrained import FAMILY as PRETRAINED_FAMILY
from hjepa.models.pretrained import EncoderArchitecture, PretrainedEncoder

ARTIFACT_FORMAT = "hjepa-encoder-v1"
SPEC_NAME = "encoder.json"
WEIGHTS_NAME = "encoder.safetensors"
FEATURE_RECIPE = (
    "level k: target-encoder patch tokens, averaged over 2^k x 2^k cells, through the level-k target head; "
    "pooled = mean over the level-k grid"
)


@dataclass
class LoadedModel:
    """A model ready for inference, with its spec."""

    model: nn.Module
    config: Config
    spec: dict[str, Any]
    source_sha256: str

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.spec["preprocessing"]["mean"])  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.spec["preprocessing"]["std"])  # type: ignore[return-value]

    @property
    def hjepa_version(self) -> str | None:
        return self.spec["provenance"].get("hjepa_version")


def is_artifact(path: str | Path) -> bool:
    """A directory holding ``encoder.json``, or that file."""
    path = Path(path)
    return (path.is_dir() and (path / SPEC_NAME).is_file()) or (path.is_file() and path.name == SPEC_NAME)


def normalisation(cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The config's dataset statistics; read once, then they travel in ``encoder.json``."""
    name = cfg.data.dataset
    mean, std = dataset_stats(name if name in DATASET_STATS else "imagefolder")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def make_spec(
    model: nn.Module, cfg: Config, source: str, source_sha256: str, hjepa_version: str | None = None,
    licence: str | None = None,
) -> dict[str, Any]:
    """The ``encoder.json`` document of an hjepa model trained with ``cfg``."""
    mean, std = normalisation(cfg)
    encoder = model.target_encoder
    heads = "layernorm" if cfg.model.target_heads == "layernorm" else "linear+layernorm"
    return {
        "format": ARTIFACT_FORMAT,
        "architecture": {
            "family": "hjepa-vit",
            "embed_dim": int(encoder.embed_dim),
            "depth": len(encoder.vit.blocks),
            "num_heads": int(encoder.vit.blocks[0].attn.num_heads),
            "patch_size": int(cfg.model.patch_size),
            "img_size": int(cfg.model.img_size),
            "class_token": False,
            "pos_embed": "sincos-2d",
            "num_levels": int(model.num_levels),
            "head": heads,
            "head_dim": int(model.target_heads[0].out_features) if hasattr(model.target_heads[0], "out_features")
            else int(encoder.embed_dim),
        },
        "preprocessing": {"img_size": int(cfg.model.img_size), "mean": list(mean), "std": list(std)},
        "feature": {"recipe": FEATURE_RECIPE, "levels": list(range(model.num_levels))},
        "provenance": {
            "source": source,
            "source_sha256": source_sha256,
            "config_name": cfg.name,
            "dataset": cfg.data.dataset,
            "licence": licence,
            "hjepa_version": hjepa_version or hjepa.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "config": cfg.to_dict(),
    }


def write_artifact(loaded: LoadedModel, directory: Path) -> dict[str, Any]:
    """Weights and spec into an existing ``directory``; returns the spec."""
    weights = {k: v.detach().cpu().contiguous() for k, v in inference_state(loaded.model.state_dict()).items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:  # safetensors alone writes mode 0600, whatever the umask
        save_file(weights, str(tmp), metadata={"format": ARTIFACT_FORMAT})
    # safetensors has no checksum: the spec holds one
    spec = {**loaded.spec, "weights_sha256": file_sha256(directory / WEIGHTS_NAME)}
    atomic_write_text(directory / SPEC_NAME, json.dumps(spec, indent=2) + "\n")
    return spec


def read_spec(directory: Path) -> dict[str, Any]:
    """``encoder.json``, checked for what inference reads."""
    path = directory / SPEC_NAME
    try:
        spec = json.loads(path.read_text())
        fmt = spec["format"]
        spec["preprocessing"]["mean"], spec["preprocessing"]["std"]  # noqa: B018  (must exist)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path} is not a readable hjepa encoder artifact ({reason})") from None
    if fmt != ARTIFACT_FORMAT:
        raise CheckpointError(f"{path} has format {fmt!r}; this version reads {ARTIFACT_FORMAT!r}")
    return spec


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """An artifact directory or its ``encoder.json`` -> :class:`LoadedModel`."""
    directory = Path(path)
    directory = directory.parent if directory.is_file() else directory
    spec = read_spec(directory)
    family = spec.get("architecture", {}).get("family")
    if family == PRETRAINED_FAMILY:  # hjepa-import's: built from its architecture block
        try:
            with torch.device("meta"):  # no random init, no second copy
                model = PretrainedEncoder(EncoderArchitecture.from_dict(spec["architecture"]),
                                          spec["provenance"].get("config_name") or "imported")
        except (TypeError, ValueError) as exc:
            reason = f"{directory}/{SPEC_NAME} describes an encoder this version cannot build: {exc}"
            raise CheckpointError(reason) from None
        cfg = model.config
    elif family != "hjepa-vit" or not spec.get("config"):
        raise CheckpointError(f"{directory}: encoder family {family!r} cannot be built by this version of hjepa")
    else:
        try:
            cfg = Config.from_dict(spec["config"])
        except ConfigError as exc:
            raise CheckpointError(f"{directory}/{SPEC_NAME} holds an invalid config: {exc}") from None
        model = build_model(cfg)
    weights_path = directory / WEIGHTS_NAME
    weights_sha = file_sha256(weights_path) if weights_path.is_file() else None
    expected = spec.get("weights_sha256")  # absent in older artifacts
    if weights_sha is not None and expected is not None and weights_sha != expected:
        raise CheckpointError(f"{weights_path} is corrupt: its SHA-256 does not match the one {SPEC_NAME} recorded "
                              "when it was written; export or import it again")
    try:
        weights = load_file(str(weights_path))
    except Exception as exc:  # safetensors has its own error types
        raise CheckpointError(f"{weights_path} is unreadable ({type(exc).__name__}: {exc})"[:300]) from None
    check_state(inference_state(model.state_dict()), weights, source=str(weights_path))
    model.load_state_dict(weights, strict=False, assign=True)  # replaces the meta tensors
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{weights_path} does not hold {left[0]!r}; export or import it again")
    return LoadedModel(model.to(device).eval(), cfg, spec, weights_sha)


def load_source_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A checkpoint (``.pt`` or run directory) or artifact -> :class:`LoadedModel`, inference weights only."""
    if is_artifact(path):
        return load_artifact(path, device)
    file = checkpoint_file(path)
    state = load_checkpoint(file)
    cfg = checkpoint_config(state)
    try:
        model = build_model(cfg)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} describes a model this version cannot build: {exc}") from None
    weights = inference_state(state["model"])
    check_state(inference_state(model.state_dict()), weights, source=str(path))
    model.load_state_dict(weights, strict=False)
    sha = file_sha256(file)
    spec = make_spec(model, cfg, str(file), sha, state.get("hjepa_version"))
    return LoadedModel(model.to(device).eval(), cfg, spec, sha)
