"""Checkpoints: atomic writes, ``last`` plus every N steps (keep the last K), safe and verified loading only.

A checkpoint is a dict of tensors and plain values written with ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects: a file that needs more is rejected.
Loading also verifies integrity, since torch's reader does not check the zip CRCs it writes (100 flipped bytes in a
weight load silently): every record's CRC is checked, and the model weights against the SHA-256 stored at save time
(``model_sha256``; older checkpoints without it rely on the CRCs alone).
"""

from __future__ import annotations

import hashlib
import pickle
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import hjepa
from hjepa.config import Config, ConfigError
from hjepa.train.atomic import atomic_open, remove_stale_temp_files

FORMAT = "hjepa-checkpoint-v1"
DIGEST_KEY = "model_sha256"
CHECKPOINT_NAMES = ("last.pt", "step_*.pt")  # what save_checkpoint writes, for the cleanup of stale temporaries


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or from another architecture."""


def rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and plain numbers, so the checkpoint loads with ``weights_only=True`` and nothing
    is ever unpickled (the numpy state used to be pickled bytes, which ``pickle.loads`` would run on resume)."""
    numpy_state = np.random.get_state(legacy=False)
    _, python_internal, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": torch.tensor(python_internal, dtype=torch.int64),
        "python_gauss": python_gauss,  # the cached second value of random.gauss, or None
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


class _NumpyStateUnpickler(pickle.Unpickler):
    """Reads the numpy RNG state of checkpoints written before it was stored as tensors: a tuple of numbers and one
    uint32 array. Only numpy's array reconstruction is allowed; anything else is refused, never called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _numpy_state(saved: Any) -> Any:
    if isinstance(saved, dict):
        return {
            "bit_generator": "MT19937",
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": int(saved["pos"])},
            "has_gauss": int(saved["has_gauss"]),
            "gauss": float(saved["gauss"]),
        }
    import io

    return _NumpyStateUnpickler(io.BytesIO(saved.numpy().tobytes())).load()  # the legacy pickled tuple


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved; a damaged or unsafe entry raises :class:`CheckpointError`."""
    try:
        numpy_state = _numpy_state(state["numpy"])
        python_state = (3, tuple(int(v) for v in state["python"].tolist()), state.get("python_gauss"))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError, RuntimeError, EOFError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        raise CheckpointError(f"checkpoint rng state is damaged or unsafe ({reason})") from None


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves half a file."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def remove_stale_checkpoint_temporaries(directory: Path) -> list[Path]:
    """Delete the ``.last.pt.XXXX.tmp`` / ``.step_N.pt.XXXX.tmp`` files of writes killed by SIGKILL."""
    return remove_stale_temp_files(directory, CHECKPOINT_NAMES)


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
    """Hex SHA-256 over every tensor in ``tree`` (names, dtypes, shapes and bytes, in sorted key order)."""
    digest = hashlib.sha256()
    for name, tensor in _tensors(tree):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _check_crcs(path: Path) -> None:
    """Read every record of the archive, which makes ``zipfile`` compare its CRC-32.

    torch writes CRCs unless ``torch.serialization.set_crc32_options(False)`` was set, which stores 0 for every
    record; such a file is left to the digest check.
    """
    with zipfile.ZipFile(path) as archive:
        records = [info for info in archive.infolist() if info.file_size]
        if all(info.CRC == 0 for info in records):
            return
        for info in records:
            with archive.open(info) as handle:
                while handle.read(1 << 22):
                    pass


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    cfg: Config,
    keep_last: int = 2,
    periodic: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``last.pt`` (and ``step_{step:08d}.pt`` when ``periodic``), pruning periodic ones beyond ``keep_last``."""
    state = {
        "format": FORMAT,
        "hjepa_version": hjepa.__version__,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": cfg.to_dict(),
        "rng": rng_state(),
        **(extra or {}),
    }
    state[DIGEST_KEY] = tensor_digest(state["model"])
    last = directory / "last.pt"
    atomic_save(state, last)
    if periodic:
        atomic_save(state, directory / f"step_{step:08d}.pt")
        periodic_files = sorted(directory.glob("step_*.pt"))
        for old in periodic_files[: max(len(periodic_files) - keep_last, 0)]:
            old.unlink()
    return last


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no arbitrary unpickling) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt file or a run directory)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is damaged or not ours
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
    except Exception as exc:  # torch raises RuntimeError / EOFError / zipfile errors for damaged files
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
    """Load weights, refusing a checkpoint from another architecture with the first mismatches named."""
    own = model.state_dict()
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
    model.load_state_dict(state_dict)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights; returns (model, config, state)."""
    from hjepa.models import build_model

    state = load_checkpoint(path)
    cfg = checkpoint_config(state)
    model = build_model(cfg)
    load_model_state(model, state["model"], source=str(path))
    return model.to(device).eval(), cfg, state
