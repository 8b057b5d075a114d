"""Checkpoints: atomic writes, ``last`` plus every N steps (keep the last K), safe and verified loading only.

A checkpoint is a dict of tensors and plain values written with ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects: a file that needs more is rejected.
Each save stores a SHA-256 of the model weights (``model_sha256``), which
``hjepa.inference.artifacts.checkpoint.load_checkpoint`` checks together with the zip CRCs.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import hjepa
from hjepa.config import Config
from hjepa.files import atomic_open, remove_stale_temp_files
from hjepa.inference.artifacts.checkpoint import (  # noqa: F401  (re-exported: the training side's names)
    DIGEST_KEY,
    FORMAT,
    CheckpointError,
    checkpoint_config,
    load_checkpoint,
    load_model_state,
    tensor_digest,
)

CHECKPOINT_NAMES = ("last.pt", "step_*.pt")  # what save_checkpoint writes, for the cleanup of stale temporaries


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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the training model (with its loss) a checkpoint was trained with and load its weights; returns
    (model, config, state). Inference reads only the encoder: ``hjepa.inference.artifacts.checkpoint``."""
    from hjepa.train.model import build_training_model

    state = load_checkpoint(path)
    cfg = checkpoint_config(state)
    model = build_training_model(cfg)
    load_model_state(model, state["model"], source=str(path))
    return model.to(device).eval(), cfg, state
