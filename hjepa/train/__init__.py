"""Training: loop, step, optimizer and schedules, checkpoints, diagnostics, logging."""

from hjepa.train.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from hjepa.train.loop import NonFiniteLossError, TrainResult, train
from hjepa.train.step import train_step

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainResult",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "train",
    "train_step",
]
