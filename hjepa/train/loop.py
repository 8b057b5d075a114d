"""The training loop: owns devices, distribution, autocast, compile, logging, checkpoints and the k-NN monitor."""

from __future__ import annotations

import inspect
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from hjepa import dist
from hjepa.config import Config, ConfigError, config_differences
from hjepa.data import (
    MultiViewAugment,
    PixelNeighbours,
    PretrainAugment,
    SceneMaker,
    TrainBatches,
    batch_generator,
    build_dataset,
)
from hjepa.device import amp_enabled, resolve_device
from hjepa.errors import HJEPAError
from hjepa.files import atomic_write_text, remove_stale_temp_files
from hjepa.masks import MaskBatch, build_mask_generator
from hjepa.models import HJEPA
from hjepa.train.checkpoint import (
    CheckpointError,
    checkpoint_config,
    load_checkpoint,
    load_model_state,
    remove_stale_checkpoint_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from hjepa.train.diagnostics import collapse_diagnostics
from hjepa.train.knn_monitor import KnnMonitor
from hjepa.train.logging import MetricsLogger
from hjepa.train.model import build_training_model
from hjepa.train.optim import build_optimizer
from hjepa.train.schedules import build_schedules
from hjepa.train.step import train_step


def masks_to(masks: MaskBatch, device: torch.device) -> MaskBatch:
    """The batch's masks on ``device``. On CUDA they go through pinned memory with ``non_blocking=True``: a blocking
    copy from pageable memory synchronises the host with the stream, so the loop would wait for the previous step's
    kernels to finish instead of making the next batch's masks while they run."""
    if device.type == "cuda":
        return masks.pin_memory().to(device, non_blocking=True)
    return masks.to(device)


# Settings a resume may change and still follow the uninterrupted run; others are reported.
_RESUME_NEUTRAL = ("train.out_dir", "train.device", "train.progress", "train.log_every", "train.checkpoint_every",
                   "train.keep_last", "train.knn_", "data.data_dir", "data.download", "data.num_workers", "eval.",
                   "export.")

# What a resumable checkpoint holds (else a KeyError deep in torch).
_ENTRY_TYPES: dict[str, type] = {"step": int, "model": dict, "optimizer": dict, "rng": dict}


class NonFiniteLossError(HJEPAError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


@dataclass
class TrainResult:
    out_dir: Path
    steps: int  # the step the run ended at (the stop step when it stopped early)
    final_loss: float
    history: list[dict] = field(default_factory=list)
    knn: dict | None = None
    model: HJEPA | None = None


def build_augment(cfg: Config, mean: tuple[float, ...], std: tuple[float, ...]) -> PretrainAugment | MultiViewAugment:
    """The training augmentation: one crop per image (masked objective) or the global + local views (multiview)."""
    data = cfg.data
    if cfg.model.objective == "multiview":
        return MultiViewAugment(
            cfg.model.img_size, data.num_global_views, data.num_local_views, data.local_img_size,
            crop_scale=data.crop_scale, local_crop_scale=data.local_crop_scale, hflip=data.hflip,
            normalisation=(mean, std),
            zoom_out=data.zoom_out, zoom_out_scale=data.zoom_out_scale,
        )
    return PretrainAugment(cfg.model.img_size, crop_scale=data.crop_scale, hflip=data.hflip, mean=mean, std=std,
                           zoom_out=data.zoom_out, zoom_out_scale=data.zoom_out_scale)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def compile_runner(module: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile`` for batches whose shapes change every step (context length, distinct queries).

    ``dynamic=True`` makes sizes symbolic; duck shaping (sizes equal in the first batch share one symbol) would bake in
    coincidences such as "distinct queries == 2 x context length" and recompile when the next batch breaks them, until
    dynamo's cache limit sends the step back to eager. Without it one graph serves every batch (checked: six batches
    of different K and query counts, one compile).
    """
    import torch.fx.experimental._config as fx_config

    fx_config.use_duck_shape = False
    return torch.compile(module, dynamic=True, backend=backend)


@dataclass
class MetricsWindow:
    """Sums of the scalar outputs since the last log record. They travel in the checkpoint, so a run resumed between
    two log steps writes the same averages as an uninterrupted one."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    timed_steps: int = 0  # throughput: steps run by this process
    data_time: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def add(self, scalars: dict[str, torch.Tensor]) -> None:
        for key, value in scalars.items():
            self.sums[key] = self.sums.get(key, 0) + value.float()
        self.steps += 1
        self.timed_steps += 1

    def record(self, batch_size: int, outputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        record = {k: float(v) / self.steps for k, v in self.sums.items()}
        record.update(
            images_per_s=self.timed_steps * batch_size * dist.world_size() / max(elapsed, 1e-9),
            data_time=self.data_time / self.timed_steps,
            **collapse_diagnostics(outputs["target_pooled"]),
        )
        if device.type == "cuda":
            record["memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        return record

    def state(self) -> dict:
        return {"steps": self.steps, "sums": {k: v.cpu() for k, v in self.sums.items()}}


@dataclass
class Resumed:
    step: int = 0
    loss: float = math.nan
    window: MetricsWindow = field(default_factory=MetricsWindow)


def check_run_folder(cfg: Config, resume: bool, overwrite: bool, stop_at: int | None) -> tuple[Path, Path]:
    """``(out_dir, checkpoints dir)``; refuses a run folder that is a file or already holds a run."""
    if stop_at is not None and stop_at < 1:
        raise ConfigError(f"the stop step (--stop-after) must be >= 1, got {stop_at}")
    out_dir = Path(cfg.train.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    for folder in (out_dir, ckpt_dir):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"run directory {folder} exists and is not a directory (train.out_dir / --out)")
    if not resume and not overwrite and (ckpt_dir / "last.pt").exists():
        raise ConfigError(f"{out_dir} already holds a run ({ckpt_dir / 'last.pt'}): continue it with --resume, start "
                          "it over with --overwrite, or choose another --out")
    return out_dir, ckpt_dir


def resume_from(last: Path, cfg: Config, model: HJEPA, optimizer: torch.optim.Optimizer,
                device: torch.device) -> Resumed:
    """Load ``last`` into ``model`` and ``optimizer`` and restore the RNGs; refuses a different model config."""
    if not last.exists():
        raise CheckpointError(f"--resume given but {last} does not exist")
    state = load_checkpoint(last)
    missing = [key for key, kind in _ENTRY_TYPES.items() if not isinstance(state.get(key), kind)]
    if missing:
        raise CheckpointError(f"cannot resume {last}: it has no usable {', '.join(missing)} entry")
    saved = checkpoint_config(state)
    if saved.model != cfg.model:
        raise CheckpointError(f"cannot resume {last}: its model config differs from this run's")
    changed = config_differences(saved, cfg, ignore=_RESUME_NEUTRAL)
    if changed and dist.is_main():
        warnings.warn(f"resuming {last} with settings that differ from the run's ({'; '.join(changed)}): the "
                      "resumed run will not match an uninterrupted one", stacklevel=3)
    load_model_state(model, state["model"], source=str(last))
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot resume {last}: its optimizer state does not fit ({reason})") from None
    restore_rng_state(state["rng"])
    saved_window = state.get("metrics_window") or {}
    window = MetricsWindow({k: v.to(device) for k, v in saved_window.get("sums", {}).items()},
                           int(saved_window.get("steps", 0)))
    return Resumed(int(state["step"]), float(state.get("loss", math.nan)), window)


def wrap_model(model: HJEPA, cfg: Config, distributed: bool, device: torch.device) -> torch.nn.Module:
    """The module the step calls: DDP when distributed, compiled when asked."""
    runner: torch.nn.Module = model
    if distributed:
        # Buffers never change: no broadcast per forward (torch >= 2.14 renames the flag).
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        runner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                         **no_buffer_sync)
    return compile_runner(runner) if cfg.train.compile else runner


class BatchMaker:
    """Step ``step``'s views and masks from the loader's images: the augmentation, the mask generator and the
    neighbour views, each seeded by step so a resumed run draws the same batches."""

    def __init__(self, cfg: Config, dataset: object, model: HJEPA, batches: TrainBatches, device: torch.device):
        self.cfg, self.model, self.batches, self.device = cfg, model, batches, device
        self.augment = build_augment(cfg, dataset.mean, dataset.std)
        # The multi-view objective has no masks: its views are the augmentation's output.
        self.mask_generator = (build_mask_generator(cfg.masks, model.grid, model.num_levels)
                               if cfg.model.objective == "masked" else None)
        self.neighbours = None
        if cfg.data.neighbour_views:
            if not dataset.in_memory:
                raise ConfigError(
                    f"data.neighbour_views needs an in-memory dataset; {dataset.name} decodes images lazily")
            table_device = device if cfg.data.on_device else torch.device("cpu")  # where the crops are made
            self.neighbours = PixelNeighbours(dataset.tensors()[0].to(table_device), cfg.data.neighbour_views,
                                              cfg.data.neighbour_pool)
        self.scenes = None
        if cfg.data.scenes:
            self.scenes = SceneMaker(cfg.data.scenes, cfg.data.scene_layouts, cfg.data.scene_anchor)

    def __call__(self, step: int, images: torch.Tensor) -> tuple[torch.Tensor, MaskBatch | None]:
        cfg, device, seed = self.cfg, self.device, self.cfg.train.seed
        masks = None
        if self.mask_generator is not None:  # identical on every rank: seeded by step only
            masks = self.mask_generator(cfg.data.batch_size, batch_generator(seed, step, "cpu"))
            if self.model.packs_queries:
                masks = masks.with_queries()  # the packed predictor's layout, made here on the CPU
            masks = masks_to(masks, device)
        aug_gen = batch_generator(seed * 7919 + dist.rank(), step, images.device)
        second = scenes = None
        if self.neighbours is not None:  # its own generator: the crops stay those of a run without neighbours
            second = self.neighbours(images, self.batches.batch_indices(step),
                                     batch_generator(seed * 7907 + dist.rank(), step, "cpu"))
            second = second.to(device, non_blocking=True)
        images = images.to(device, non_blocking=True)
        if self.scenes is not None:  # its own generator too
            scenes = self.scenes(images, self.cfg.data.num_global_views,
                                 batch_generator(seed * 7901 + dist.rank(), step, "cpu"),
                                 second if self.cfg.data.scene_neighbours else None)
        if self.cfg.model.objective == "multiview":
            images = self.augment(images, aug_gen, second, scenes)
        else:
            images = self.augment(images, aug_gen)
        torch.manual_seed(seed * 1_000_003 + step)  # drop path draws from the global RNG
        return images, masks


def prepare_run_folder(cfg: Config, out_dir: Path, ckpt_dir: Path, logger: MetricsLogger, start_step: int) -> bool:
    """Clear what a killed or replaced run left; returns whether ``config.yaml`` was written. A resumed run writes
    it only with its first checkpoint, so a resume that fails before that leaves the old one in place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_checkpoint_temporaries(ckpt_dir)  # SIGKILL leaves them; this run is the only writer here
    remove_stale_temp_files(out_dir, (logger.path.name, "config.yaml"))
    if start_step:
        logger.truncate_after(start_step)
        return False
    atomic_write_text(out_dir / "config.yaml", cfg.to_yaml())
    logger.path.unlink(missing_ok=True)  # a fresh start: nothing of an earlier run may pass for this one's
    for stale in ckpt_dir.glob("*.pt"):
        stale.unlink()
    return True


def check_finite(loss: torch.Tensor, scalars: dict[str, torch.Tensor], step: int, ckpt_dir: Path) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        parts = {k: round(float(v), 5) for k, v in scalars.items()}
        kept = (f"the last good checkpoint in {ckpt_dir} is intact" if (ckpt_dir / "last.pt").exists()
                else "no checkpoint had been written yet")
        raise NonFiniteLossError(f"non-finite loss at step {step}: {parts}; {kept}")
    return value


def train(cfg: Config, resume: bool = False, stop_at: int | None = None, overwrite: bool = False) -> TrainResult:
    """Train HJEPA as ``cfg`` says, writing ``config.yaml``, ``checkpoints/`` and ``metrics.jsonl`` under out_dir.

    ``stop_at`` ends the run early after that step (with a checkpoint) without changing the schedules;
    ``resume=True`` later continues exactly there. A folder holding a run needs ``resume`` or ``overwrite``.
    """
    # Phase 1. Device, data, model, optimizer; resume.
    out_dir, ckpt_dir = check_run_folder(cfg, resume, overwrite, stop_at)
    device = resolve_device(cfg.train.device)
    distributed = dist.init_distributed(device.type)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank())
    use_amp = amp_enabled(device, cfg.train.amp, cfg.train.cpu_amp)
    seed_everything(cfg.train.seed)
    dataset = build_dataset(cfg.data.dataset, "train", cfg.data.data_dir, cfg.data.download)
    if cfg.data.limit:
        dataset = dataset.limit(cfg.data.limit)
    model = build_training_model(cfg).to(device)
    schedules = build_schedules(cfg)
    model.set_momentum_schedule(schedules.momentum)
    optimizer = build_optimizer(model, cfg.optim, device)
    start = resume_from(ckpt_dir / "last.pt", cfg, model, optimizer, device) if resume else Resumed()
    runner = wrap_model(model, cfg, distributed, device)
    batches = TrainBatches(dataset, cfg.data.batch_size, seed=cfg.train.seed, rank=dist.rank(),
                           world_size=dist.world_size(), device=device, on_device=cfg.data.on_device,
                           num_workers=cfg.data.num_workers)
    make_batch = BatchMaker(cfg, dataset, model, batches, device)
    main = dist.is_main()
    monitor = (KnnMonitor(cfg, device, cfg.train.knn_train_samples, cfg.train.knn_test_samples)
               if cfg.train.knn_every and main else None)

    # Phase 2. The run folder, only now that everything that can refuse the config is built.
    logger = MetricsLogger(out_dir, enabled=main)
    config_written = prepare_run_folder(cfg, out_dir, ckpt_dir, logger, start.step) if main else False

    # Phase 3. The steps.
    check_every = 1 if device.type == "cpu" else cfg.train.log_every  # a sync is free on the CPU only
    end = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
    window, last_loss, history, knn_result, done = start.window, start.loss, [], None, start.step
    bar = tqdm(total=cfg.train.steps, initial=start.step, disable=not (main and cfg.train.progress), desc="train")
    model.train()
    window.start = fetch_start = time.perf_counter()
    for step, images, _labels in batches.iterate(start.step):
        if step >= end:
            break
        images, masks = make_batch(step, images)
        window.data_time += time.perf_counter() - fetch_start
        outputs = train_step(runner, model, images, masks, optimizer, schedules, step, cfg.optim.clip_grad, use_amp)
        scalars = {k: v.detach() for k, v in outputs.items() if v.ndim == 0}
        window.add(scalars)
        done = step + 1

        # Phase 4. Loss check (always before a checkpoint), logging, k-NN, checkpoint.
        saving = main and (done % cfg.train.checkpoint_every == 0 or done in (cfg.train.steps, stop_at))
        if done % check_every == 0 or done % cfg.train.checkpoint_every == 0 or done in (cfg.train.steps, stop_at):
            last_loss = check_finite(outputs["loss"], scalars, step, ckpt_dir)
        # Not at stop_at: an uninterrupted run never writes that partial window.
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            record = window.record(cfg.data.batch_size, outputs, device)
            logger.log(done, record)
            history.append({"step": done, **record})
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
            window = MetricsWindow()
        if monitor is not None and (done % cfg.train.knn_every == 0 or done == cfg.train.steps):
            knn_result = monitor(model)
            prefix = "knn_top1" if cfg.train.knn_split == "test" else "knn_val_top1"
            logger.log(done, {f"{prefix}_k{k}": v["top1"] for k, v in knn_result.items()})
        if saving:
            save_checkpoint(ckpt_dir, done, model, optimizer, cfg, cfg.train.keep_last,
                            periodic=done % cfg.train.checkpoint_every == 0,
                            extra={"loss": last_loss, "metrics_window": window.state()})
            if not config_written:
                atomic_write_text(out_dir / "config.yaml", cfg.to_yaml())
                config_written = True
        bar.update(1)
        fetch_start = time.perf_counter()
    bar.close()
    logger.close()
    dist.barrier()
    return TrainResult(out_dir, done, last_loss, history, knn_result, model)


def unwrap(model: torch.nn.Module) -> HJEPA:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model  # type: ignore[return-value]
