"""Distributed helpers; every function is a no-op (or the obvious constant) in a single process.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; ``init_distributed`` reads them and picks NCCL on CUDA and gloo on
the CPU. Collectives are guarded by ``dist.is_initialized()`` so library code can call them unconditionally.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init_distributed(device_type: str) -> bool:
    """Start the process group when launched by torchrun; returns whether training is distributed."""
    if not launched_by_torchrun() or is_initialized():
        return is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (in place, also returned); unchanged in one process."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= world_size()
    return tensor


def broadcast_object(obj: object, src: int = 0) -> object:
    if not is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
