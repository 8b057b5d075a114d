"""Deterministic, resumable batch streams: the batch at step ``s`` is a pure function of ``(seed, s, rank)``.

Epoch ``e`` shuffles with a generator seeded from ``(seed, e)``; step ``s`` of the run is batch ``s %
steps_per_epoch`` of epoch ``s // steps_per_epoch``. A resumed run therefore jumps straight to its step with no
replay, and every rank takes its own contiguous slice of the same global batch, so ranks see disjoint data as with
``DistributedSampler``. Augmentation and masks draw from ``batch_generator(seed, step)`` for the same reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from hjepa.data.base import DataError, ImageDataset
from hjepa.device import to_device_async

T = TypeVar("T")

# Salted so epoch shuffles and per-step augmentation never share a seed.
_EPOCH_SALT = 0
_STEP_SALT = 1


def mix_seed(seed: int, index: int, salt: int) -> int:
    """A 63-bit seed from ``(seed, index, salt)`` via numpy's SeedSequence hash, stable across versions/machines."""
    entropy = [int(seed) % 2**64, int(index) % 2**64, int(salt)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def batch_generator(seed: int, step: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded from ``(seed, step)``, for the augmentation and masks of
    ``step``. CPU and CUDA generators seeded alike produce different streams; pick one device per run.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(mix_seed(seed, step, _STEP_SALT))


class TrainBatches:
    """An endless stream of ``(step, images uint8 [B, C, H, W], labels long [B])`` on ``device``.

    ``batch_size`` is per rank; the global batch is ``batch_size * world_size``. In-memory datasets are gathered
    from their uint8 tensor (with ``on_device=True`` that tensor is moved to ``device`` once and every batch is
    gathered there, the fast path for CIFAR-scale data on a GPU); lazy datasets go through a ``DataLoader`` with
    ``num_workers`` whose batch sampler yields the same index lists. With ``drop_last=False`` the last batch of an
    epoch is filled up from the start of that epoch's permutation, so every batch has the full size.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        on_device: bool = False,
        num_workers: int = 0,
        drop_last: bool = True,
    ) -> None:
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        global_batch = batch_size * world_size
        if len(dataset) < global_batch:
            raise DataError(
                f"{dataset.name} ({dataset.split}) has {len(dataset)} images, fewer than one global batch of "
                f"{global_batch} ({batch_size} per rank x {world_size} ranks); lower data.batch_size"
            )
        if on_device and not dataset.in_memory:
            raise DataError(f"{dataset.name} decodes images lazily; on_device needs an in-memory dataset")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.on_device = on_device
        self.num_workers = num_workers
        self.drop_last = drop_last
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        if dataset.in_memory:
            images, labels = dataset.tensors()
            target = self.device if on_device else torch.device("cpu")
            self._images, self._labels = images.to(target), labels.to(target)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        count = len(self.dataset) / self.global_batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """long ``[steps_per_epoch * global_batch_size]`` (CPU): the dataset indices of ``epoch``, batch after batch."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, _EPOCH_SALT))
        order = torch.randperm(len(self.dataset), generator=generator)
        needed = self.steps_per_epoch * self.global_batch_size
        if needed > order.numel():  # drop_last=False: wrap around instead of a short batch
            order = torch.cat([order, order[: needed - order.numel()]])
        return order[:needed]

    def _rank_slice(self, batch: int) -> slice:
        start = batch * self.global_batch_size + self.rank * self.batch_size
        return slice(start, start + self.batch_size)

    def batch_indices(self, step: int) -> torch.Tensor:
        """long ``[batch_size]``: the dataset indices this rank reads at ``step``."""
        epoch, batch = divmod(step, self.steps_per_epoch)
        return self.epoch_order(epoch)[self._rank_slice(batch)]

    def _index_lists(self, start_step: int) -> Iterator[list[int]]:
        epoch, first_batch = divmod(start_step, self.steps_per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for batch in range(first_batch, self.steps_per_epoch):
                yield order[self._rank_slice(batch)].tolist()
            epoch, first_batch = epoch + 1, 0


    def iterate(self, start_step: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(step, images, labels)`` for ``step = start_step, start_step + 1, ...`` forever."""
        if start_step < 0:
            raise DataError(f"start_step must be >= 0, got {start_step}")
        if self._images is not None and self._labels is not None:
            yield from self._iterate_in_memory(start_step, self._images, self._labels)
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=_IndexListSampler(self._index_lists(start_step)),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for step, (images, labels) in enumerate(worker_errors(loader), start=start_step):
            yield step, to_device_async(images, self.device), to_device_async(labels, self.device)

    def _iterate_in_memory(
        self, start_step: int, images: torch.Tensor, labels: torch.Tensor
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        epoch, first_batch = divmod(start_step, self.steps_per_epoch)
        step = start_step
        while True:
            # One pinned (non-syncing) copy of the indices; every gather then stays on the device.
            order = to_device_async(self.epoch_order(epoch), images.device)
            for batch in range(first_batch, self.steps_per_epoch):
                index = order[self._rank_slice(batch)]
                yield step, to_device_async(images[index], self.device), to_device_async(labels[index], self.device)
                step += 1
            epoch, first_batch = epoch + 1, 0


def worker_errors(batches: Iterable[T]) -> Iterator[T]:
    """``batches``, with a DataError raised in a DataLoader worker re-raised as its own one-line message.

    torch re-raises a worker's exception in the main process as ``DataError("Caught DataError in DataLoader worker
    process 0.\nOriginal Traceback ...\nhjepa.data.base.DataError: cannot decode image ...")``: 30 lines where the
    same error without workers is one. The worker's message is the traceback's last line, after the type's name.
    """
    try:
        yield from batches
    except DataError as error:
        text = str(error)
        if "DataLoader worker" not in text:
            raise
        last = text.strip().splitlines()[-1]
        raise DataError(re.sub(r"^[\w.]+: ", "", last, count=1)) from None


class _IndexListSampler:
    """A ``batch_sampler`` over a precomputed (endless) stream of index lists; iterable once."""

    def __init__(self, index_lists: Iterator[list[int]]) -> None:
        self._index_lists = index_lists

    def __iter__(self) -> Iterator[list[int]]:
        return self._index_lists


def iterate_eval(
    dataset: ImageDataset, batch_size: int, num_workers: int = 0, device: str | torch.device = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every image once, in dataset order, as ``(images uint8 [b, C, H, W], labels long [b])`` on ``device``;
    the last batch may be smaller. For feature extraction and evaluation.
    """
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    target = torch.device(device)
    if dataset.in_memory:
        images, labels = dataset.tensors()
        for start in range(0, len(dataset), batch_size):
            yield images[start : start + batch_size].to(target), labels[start : start + batch_size].to(target)
        return
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=target.type == "cuda"
    )
    for images, labels in worker_errors(loader):
        yield images.to(target, non_blocking=True), labels.to(target, non_blocking=True)
