"""GPU path: bf16 autocast, fused AdamW, on-device data, and no host syncs inside a training step.

Marked ``gpu``: skipped without CUDA (see conftest.py), run by benchmarks/gpu.sh on an NVIDIA machine.
"""

import pytest
import torch

from hjepa.config import load_config
from hjepa.data import PretrainAugment, batch_generator
from hjepa.masks import build_mask_generator
from hjepa.train import train
from hjepa.train.loop import masks_to
from hjepa.train.model import build_training_model
from hjepa.train.optim import build_optimizer
from hjepa.train.schedules import build_schedules
from hjepa.train.step import train_step

pytestmark = pytest.mark.gpu


def test_cuda_run_with_bf16_and_on_device_data(tmp_path):
    cfg = load_config("digits-debug", [f"train.out_dir={tmp_path}", "train.device=cuda", "data.on_device=true"])
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result.final_loss))
    assert next(result.model.parameters()).device.type == "cuda"
    assert "memory_gb" in result.history[-1]


@pytest.mark.parametrize("regularizer", ["none", "vicreg", "barlow", "sigreg"])
def test_train_step_makes_no_host_syncs(regularizer):
    device = torch.device("cuda")
    sets = ["train.steps=10", f"loss.regularizer={regularizer}", "loss.regularizer_weight=[0.1]"]
    cfg = load_config("digits-debug", sets)
    model = build_training_model(cfg).to(device)
    schedules = build_schedules(cfg)
    model.set_momentum_schedule(schedules.momentum)
    optimizer = build_optimizer(model, cfg.optim, device)
    assert optimizer.defaults.get("fused"), "fused AdamW expected on CUDA"
    generator = build_mask_generator(cfg.masks, model.grid, model.num_levels)
    images = torch.randn(16, 3, 16, 16, device=device)
    masks = generator(16, batch_generator(0, 0)).with_queries().to(device)  # as the loop: layout made on the CPU
    train_step(model, model, images, masks, optimizer, schedules, 0, cfg.optim.clip_grad, amp=True)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outputs = train_step(model, model, images, masks, optimizer, schedules, 1, cfg.optim.clip_grad, amp=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert outputs["loss"].dtype == torch.float32 and torch.isfinite(outputs["loss"]).item()


def test_bf16_autocast_keeps_losses_in_float32():
    device = torch.device("cuda")
    cfg = load_config("digits-debug")
    model = build_training_model(cfg).to(device)
    generator = build_mask_generator(cfg.masks, model.grid, model.num_levels)
    masks = generator(8, batch_generator(0, 0)).to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(torch.randn(8, 3, 16, 16, device=device), masks)
    assert all(v.dtype == torch.float32 for k, v in out.items() if k.startswith("loss"))


def test_the_loops_per_step_path_makes_no_host_syncs():
    """What the loop does between fetching a batch and the next: the masks (made on the CPU, packed-query layout
    included) copied over, on-device augmentation, the step. A blocking copy of pageable masks would sync."""
    device = torch.device("cuda")
    cfg = load_config("digits-debug", ["train.steps=10"])
    model = build_training_model(cfg).to(device)
    assert model.packs_queries
    schedules = build_schedules(cfg)
    model.set_momentum_schedule(schedules.momentum)
    optimizer = build_optimizer(model, cfg.optim, device)
    generator = build_mask_generator(cfg.masks, model.grid, model.num_levels)
    augment = PretrainAugment(cfg.model.img_size, mean=(0.5,) * 3, std=(0.5,) * 3)
    # data.on_device: the dataset already on the GPU; otherwise pinned CPU batches from the DataLoader.
    sources = [torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, device=device),
               torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8).pin_memory()]

    def step(index: int, raw: torch.Tensor) -> dict:
        masks = masks_to(generator(16, batch_generator(0, index)).with_queries(), device)
        aug_gen = batch_generator(1, index, raw.device)  # as the loop: the generator lives where the batch does
        images = augment(raw.to(device, non_blocking=True), aug_gen)
        return train_step(model, model, images, masks, optimizer, schedules, index, cfg.optim.clip_grad, amp=True)

    for raw in sources:
        step(0, raw)  # warm-up: first-call allocations, cuBLAS handles, statistics copied to the GPU
    torch.cuda.synchronize()
    cpu_masks = generator(16, batch_generator(0, 5)).with_queries()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step(1 + i, raw)["loss"] for i, raw in enumerate(sources)]
        moved = masks_to(cpu_masks, device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss).item() for loss in losses)
    assert moved.context_idx.is_cuda and torch.equal(moved.context_idx.cpu(), cpu_masks.context_idx)
    assert torch.equal(moved.queries.rows.cpu(), cpu_masks.queries.rows)


def test_neighbour_views_search_on_the_gpu_with_on_device_data(tmp_path):
    cfg = load_config("digits-debug", [
        f"train.out_dir={tmp_path}", "train.device=cuda", "data.on_device=true", "model.objective=multiview",
        "loss.regularizer=vicreg", "loss.regularizer_weight=[0.05]", "data.neighbour_views=0.5",
        "data.neighbour_pool=256", "train.steps=5", "train.knn_every=0",
    ])
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result.final_loss))
