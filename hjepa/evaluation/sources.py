"""What ``hjepa-eval`` evaluates: a checkpoint, an export, an engine or a random-init baseline, as one object."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hjepa.config import load_config
from hjepa.data import EvalTransform
from hjepa.errors import OptionError
from hjepa.inference import Runtime, RuntimeUnavailableError, file_sha256, open_runtime, source_kind
from hjepa.inference.runtimes.runtime_torch import TorchRuntime
from hjepa.models import build_model

RANDOM_INIT_SEED = 0


@dataclass
class EvalSource:
    """A model to evaluate; ``source_hash`` identifies its weights and keys the feature cache."""

    runtime: Runtime
    kind: str
    name: str
    source_hash: str

    @property
    def levels(self) -> list[int]:
        """Levels served: one for a lone ``.onnx`` file, all for a checkpoint."""
        return self.runtime.levels

    @property
    def backend(self) -> str:
        """The back-end, e.g. ``torch[cpu]``, ``onnxruntime[CPUExecutionProvider]``."""
        return self.runtime.backend

    @property
    def img_size(self) -> int:
        return self.runtime.metadata.img_size

    def transform(self) -> EvalTransform:
        """uint8 ``[B, C, H, W]`` -> float ``[B, 3, S, S]`` with the mean / std the model was trained with."""
        meta = self.runtime.metadata
        return EvalTransform(meta.img_size, mean=meta.mean, std=meta.std)

    def embed_pooled(self, images: torch.Tensor, level: int) -> torch.Tensor:
        """Normalised ``[B, 3, S, S]`` -> pooled float32 ``[B, D]`` on the CPU."""
        _, pooled = self.runtime.embed_preprocessed(images, level, batch_size=images.shape[0])
        return torch.from_numpy(pooled)

    def embed_pooled_levels(self, images: torch.Tensor, levels: list[int]) -> dict[int, torch.Tensor]:
        """Normalised ``[B, 3, S, S]`` -> ``{level: pooled [B, D]}``; token maps stay on the device."""
        out = self.runtime.embed_levels(images, levels, with_tokens=False)
        return {level: torch.from_numpy(pooled) for level, (_, pooled) in out.items()}

    def embed_features(
        self, images: torch.Tensor, levels: list[int], feature: str = "pooled"
    ) -> dict[int, torch.Tensor]:
        """``{level: [B, F]}``: the pooled feature (``F = D``), or with ``feature="grid"`` the level-k grid's cells
        in raster order, flattened (``F = N_k * D``): the layout the pooled mean discards."""
        if feature == "pooled":
            return self.embed_pooled_levels(images, levels)
        out = self.runtime.embed_levels(images, levels, with_tokens=True)
        return {level: torch.from_numpy(tokens.reshape(tokens.shape[0], -1)) for level, (tokens, _) in out.items()}

    def describe(self) -> dict:
        """Kind, backend, hash and metadata for the report."""
        return {
            "kind": self.kind,
            "backend": self.backend,
            "source_hash": self.source_hash,
            "model": self.runtime.metadata.to_dict(),
        }


def _require_tensorrt(path: Path) -> None:
    """Say so before the TensorRT import fails somewhere deep."""
    if not torch.cuda.is_available():
        raise RuntimeUnavailableError(
            f"{path} is a TensorRT engine, which needs an NVIDIA GPU with CUDA and none is available here; "
            "evaluate the .onnx export or the checkpoint instead"
        )


def random_init_source(config: str, device: str = "auto", seed: int = RANDOM_INIT_SEED) -> EvalSource:
    """The baseline row: ``config``'s model with weights drawn from ``seed``, never trained."""
    cfg = load_config(config)
    # leave the caller's RNG stream alone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    runtime = TorchRuntime.from_model(model, cfg, device=device)
    name = f"random-init:{config}"
    runtime.source = name
    # the weights too: changed init code must miss the cache
    fields = {"random_init": cfg.to_dict(), "seed": seed, "weights": runtime.identity}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return EvalSource(runtime, "random-init", name, digest)


def resolve_source(
    source: str | Path | None = None,
    random_init: str | None = None,
    backend: str = "auto",
    device: str = "auto",
) -> EvalSource:
    """A path (checkpoint, ``.onnx``, export directory, ``.engine``) or ``random_init=CONFIG``, not both."""
    if (source is None) == (random_init is None):
        raise OptionError("give either a SOURCE (checkpoint, .onnx, export directory, .engine) or --random-init CONFIG")
    if random_init is not None:
        return random_init_source(random_init, device=device)
    path = Path(source).expanduser()
    kind = source_kind(path)
    if kind == "engine" or (kind == "export" and backend == "tensorrt"):
        _require_tensorrt(path)
    try:
        runtime = open_runtime(path, backend=backend, device=device)
    except ModuleNotFoundError as exc:  # e.g. TensorRT not installed
        raise RuntimeUnavailableError(f"cannot open {path}: module {exc.name!r} is not installed") from None
    if kind in ("onnx", "engine"):
        digest = file_sha256(path)
    else:  # a checkpoint's SHA-256 or an export's digest of its files
        digest = runtime.identity
    if kind == "export" and runtime.backend == "tensorrt":
        kind = "engine"
    return EvalSource(runtime, kind, str(path), digest)


def in_bf16(source: EvalSource) -> EvalSource:
    """A PyTorch source under bf16 autocast, with its own hash so fp32 features are not reused."""
    if not hasattr(source.runtime, "use_bf16"):
        raise OptionError(f"bf16 features need the PyTorch back-end; {source.name} runs on {source.backend}")
    source.runtime.use_bf16()
    source.source_hash = hashlib.sha256(f"{source.source_hash}:bf16".encode()).hexdigest()
    return source
