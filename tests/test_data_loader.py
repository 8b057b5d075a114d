"""Batch streams: deterministic, resumable without replay, disjoint across ranks, same on every path."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from hjepa.data import DataError, TensorImageDataset, TrainBatches, batch_generator, build_dataset, iterate_eval


def numbered_dataset(count: int = 20) -> TensorImageDataset:
    """Image i is filled with the value i, so a batch's images reveal which indices it holds."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 4, 4).clone()
    labels = torch.arange(count) % 5
    return TensorImageDataset("digits", "train", images, labels, [str(i) for i in range(5)])


def take(batches: TrainBatches, start: int, count: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(batches.iterate(start), count))


def indices_of(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].tolist()


def test_deterministic_and_epochs_roll_over() -> None:
    dataset = numbered_dataset(20)
    batches = TrainBatches(dataset, batch_size=6, seed=7)
    assert batches.steps_per_epoch == 3  # 20 // 6, the last 2 images of each epoch dropped
    run = take(batches, 0, 7)
    again = take(TrainBatches(dataset, batch_size=6, seed=7), 0, 7)
    assert [step for step, _, _ in run] == list(range(7))
    for (_, images, labels), (_, images2, labels2) in zip(run, again, strict=True):
        assert torch.equal(images, images2) and torch.equal(labels, labels2)
        assert images.shape == (6, 1, 4, 4) and images.dtype == torch.uint8 and labels.dtype == torch.long
        assert labels.tolist() == [i % 5 for i in indices_of(images)]  # labels travel with their images
    epoch0 = sum((indices_of(images) for _, images, _ in run[:3]), [])
    epoch1 = sum((indices_of(images) for _, images, _ in run[3:6]), [])
    assert len(set(epoch0)) == 18 and len(set(epoch1)) == 18  # no repeats within an epoch
    assert epoch0 != epoch1  # a new permutation each epoch
    other_seed = take(TrainBatches(dataset, batch_size=6, seed=8), 0, 3)
    assert sum((indices_of(images) for _, images, _ in other_seed), []) != epoch0


def test_resume_equals_uninterrupted_run() -> None:
    batches = TrainBatches(numbered_dataset(20), batch_size=6, seed=3)
    full = take(batches, 0, 10)
    for start in (1, 3, 5, 8):
        resumed = take(TrainBatches(numbered_dataset(20), batch_size=6, seed=3), start, 10 - start)
        assert [step for step, _, _ in resumed] == list(range(start, 10))
        for (_, images, _), (_, expected, _) in zip(resumed, full[start:], strict=True):
            assert torch.equal(images, expected)
        assert torch.equal(batches.batch_indices(start), torch.tensor(indices_of(full[start][1])))


def test_ranks_split_the_global_batch() -> None:
    dataset = numbered_dataset(24)
    single = take(TrainBatches(dataset, batch_size=12, seed=1), 0, 4)
    per_rank = [take(TrainBatches(dataset, batch_size=4, seed=1, rank=r, world_size=3), 0, 4) for r in range(3)]
    for step in range(4):
        parts = [indices_of(per_rank[r][step][1]) for r in range(3)]
        assert all(len(part) == 4 for part in parts)
        assert len(set(parts[0]) | set(parts[1]) | set(parts[2])) == 12  # disjoint
        assert parts[0] + parts[1] + parts[2] == indices_of(single[step][1])  # contiguous slices of the global batch


def test_on_device_path_equals_default_path() -> None:
    dataset = numbered_dataset(20)
    default = take(TrainBatches(dataset, batch_size=5, seed=2), 2, 5)
    on_device = take(TrainBatches(dataset, batch_size=5, seed=2, on_device=True), 2, 5)
    for (step, images, labels), (step2, images2, labels2) in zip(default, on_device, strict=True):
        assert step == step2 and torch.equal(images, images2) and torch.equal(labels, labels2)


def test_keep_last_pads_the_final_batch() -> None:
    batches = TrainBatches(numbered_dataset(10), batch_size=4, seed=0, drop_last=False)
    assert batches.steps_per_epoch == 3
    epoch = [indices_of(images) for _, images, _ in take(batches, 0, 3)]
    assert all(len(batch) == 4 for batch in epoch)
    assert set(sum(epoch, [])) == set(range(10))  # every image seen; two repeated to fill the last batch


def test_lazy_dataset_matches_in_memory_order(tmp_path: Path) -> None:
    for index in range(6):
        folder = tmp_path / "train" / f"c{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), index * 10).save(folder / f"{index}.png")
    lazy = build_dataset("imagefolder", "train", data_dir=str(tmp_path), storage_size=4)
    eager = TensorImageDataset(
        "imagefolder", "train", torch.stack([lazy[i][0] for i in range(6)]), lazy.labels, lazy.classes
    )
    lazy_run = take(TrainBatches(lazy, batch_size=2, seed=5), 1, 4)
    eager_run = take(TrainBatches(eager, batch_size=2, seed=5), 1, 4)
    workers_run = take(TrainBatches(lazy, batch_size=2, seed=5, num_workers=2), 1, 4)
    for (step, images, labels), (step2, images2, labels2), (step3, images3, _) in zip(
        lazy_run, eager_run, workers_run, strict=True
    ):
        assert step == step2 == step3 and torch.equal(images, images2) and torch.equal(labels, labels2)
        assert torch.equal(images, images3)
    with pytest.raises(DataError, match="on_device needs an in-memory dataset"):
        TrainBatches(lazy, batch_size=2, seed=0, on_device=True)

    batches = list(iterate_eval(lazy, batch_size=4))
    assert [images.shape[0] for images, _ in batches] == [4, 2]
    assert torch.equal(torch.cat([labels for _, labels in batches]), lazy.labels)


def test_iterate_eval_in_order_and_small_dataset_error() -> None:
    dataset = numbered_dataset(10)
    batches = list(iterate_eval(dataset, batch_size=4))
    assert [indices_of(images) for images, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(DataError, match="digits \\(train\\) has 10 images, fewer than one global batch of 12"):
        TrainBatches(dataset, batch_size=6, seed=0, world_size=2)


def test_batch_generator_depends_on_seed_and_step() -> None:
    draw = [torch.rand(4, generator=batch_generator(seed, step)) for seed, step in ((0, 0), (0, 0), (0, 1), (1, 0))]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2]) and not torch.equal(draw[0], draw[3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_device_cuda_path_equals_cpu_path() -> None:
    dataset = numbered_dataset(20)
    cpu = take(TrainBatches(dataset, batch_size=5, seed=2), 0, 6)
    for on_device in (False, True):
        gpu = take(TrainBatches(dataset, batch_size=5, seed=2, device="cuda", on_device=on_device), 0, 6)
        for (_, images, labels), (_, images2, labels2) in zip(cpu, gpu, strict=True):
            assert images2.device.type == "cuda" and torch.equal(images, images2.cpu())
            assert torch.equal(labels, labels2.cpu())
