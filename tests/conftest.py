"""Shared fixtures: tiny configs and a tiny trained checkpoint, CPU only, no network."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_config():
    """The digits-debug preset: a 2-block ViT of width 32 on 16 px digits (4x4 grid, 2 levels)."""
    from hjepa.config import load_config

    return load_config("digits-debug")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A checkpoint from 6 real training steps of the digits-debug preset (trained once per test session)."""
    from hjepa.config import load_config
    from hjepa.train import train

    out = tmp_path_factory.mktemp("run")
    cfg = load_config("digits-debug", [f"train.out_dir={out}"])
    train(cfg)
    return out / "checkpoints" / "last.pt"


@pytest.fixture
def nan_loss_from(monkeypatch):
    """``nan_loss_from(step)``: from that training step on, the masked model's loss is NaN (``None`` restores it)."""
    from hjepa.models import HJEPA

    original = HJEPA.forward

    def poison(first_step: int | None) -> None:
        if first_step is None:
            monkeypatch.setattr(HJEPA, "forward", original)
            return

        def poisoned(self, images, masks, step=0):
            out = original(self, images, masks, step)
            if step >= first_step:
                out["loss"] = out["loss"] * float("nan")
            return out

        monkeypatch.setattr(HJEPA, "forward", poisoned)

    return poison
