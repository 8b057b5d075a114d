"""Shared by the training-option tests: a short run equals the same run stopped halfway and resumed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from hjepa.config import Config


def assert_resume_is_exact(tmp_path: Path, config: Callable[[Path], Config]) -> dict[str, torch.Tensor]:
    """Train ``config(out)`` whole and stopped at step 2 then resumed; asserts equal weights, returns them."""
    from hjepa.train import train
    from hjepa.train.checkpoint import load_checkpoint

    train(config(tmp_path / "a"))
    train(config(tmp_path / "b"), stop_at=2)
    train(config(tmp_path / "b"), resume=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a
