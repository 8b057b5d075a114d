"""Training checkpoints read safely (``weights_only``), with the zip CRCs and weight digest torch does not check."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hjepa.config import Config, ConfigError
from hjepa.errors import HJEPAError

FORMAT = "hjepa-checkpoint-v1"
DIGEST_KEY = "model_sha256"  # stored at save, checked on load


class CheckpointError(HJEPAError, ValueError):
    """Missing, corrupt, unsafe, or from another architecture."""


def _tensors(node: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(node, torch.Tensor):
        yield prefix, node
    elif isinstance(node, dict):
        for key in sorted(node, key=str):
            yield from _tensors(node[key], f"{prefix}/{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _tensors(value, f"{prefix}/{i}")


def tensor_digest(tree: Any) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for name, tensor in _tensors(tree):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _check_crcs(path: Path) -> None:
    """Read every record, so ``zipfile`` compares its CRC-32; all-zero CRCs (turned off) are left to the digest."""
    with zipfile.ZipFile(path) as archive:
        records = [info for info in archive.infolist() if info.file_size]
        if all(info.CRC == 0 for info in records):
            return
        for info in records:
            with archive.open(info) as handle:
                while handle.read(1 << 22):
                    pass


def checkpoint_file(path: str | Path) -> Path:
    """The ``.pt`` file; a run directory means ``checkpoints/last.pt``."""
    path = Path(path)
    if path.is_dir():
        return path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Without arbitrary unpickling, format and digest checked."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt file or a run directory)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt (not a torch.save archive)")
    try:
        _check_crcs(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise CheckpointError(f"checkpoint {path} is corrupt: a zip CRC check failed ({reason}); the file was "
                              "damaged after it was written: use another checkpoint (e.g. a step_*.pt)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} holds objects that are not safe to load: {reason}") from None
    except Exception as exc:  # damaged files raise many types
        reason = f"{type(exc).__name__}: {exc}"[:200]
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an hjepa checkpoint (no '{FORMAT}' format tag)")
    expected = state.get(DIGEST_KEY)
    if expected is not None and (not isinstance(state.get("model"), dict) or tensor_digest(state["model"]) != expected):
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not match the SHA-256 digest stored when "
                              "it was written; use another checkpoint (e.g. a step_*.pt)")
    return state


def checkpoint_config(state: dict[str, Any]) -> Config:
    try:
        return Config.from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from None


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuses another architecture, naming the first mismatches."""
    check_state(model.state_dict(), state_dict, source)
    model.load_state_dict(state_dict)


def check_state(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``CheckpointError`` naming the first mismatches unless keys and shapes equal ``own``'s."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} in {source} vs {tuple(v.shape)} in model"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if shapes:
            problems.append("shape mismatch " + "; ".join(shapes[:3]))
        if missing:
            problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source} is from another architecture: " + "; ".join(problems))



# what inference reads; the rest is training state
INFERENCE_PREFIXES = ("target_encoder.", "target_heads.")


def inference_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``INFERENCE_PREFIXES`` entries."""
    return {k: v for k, v in state_dict.items() if k.startswith(INFERENCE_PREFIXES)}
