"""Batched, seeded image transforms that run on whatever device the uint8 batch lives on.

Pre-training augmentation is a per-sample random resized crop plus horizontal flip, expressed as one affine map per
sample and applied with ``affine_grid`` / ``grid_sample`` in a single kernel, so a GPU run does no per-image CPU work.
Every random number comes from an explicit ``torch.Generator``; with ``hjepa.data.loader.batch_generator`` seeded by
the step, a resumed run draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hjepa.config import ConfigError
from hjepa.data.base import IMAGENET_MEAN, IMAGENET_STD
from hjepa.device import to_device_async

_CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop: retries before falling back to a center crop


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` with C in {1, 3} -> float32 in [0, 1], same shape."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected a uint8 image batch [B, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
    return images.float().div_(255.0)


class _Normalise:
    """float ``[B, 1 or 3, S, S]`` in [0, 1] -> normalised float ``[B, 3, S, S]`` (grayscale repeated to RGB). The
    statistics are copied once to each device they are used on, without a host sync (a blocking copy per call would
    be one sync per batch on a GPU)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = _stats_tensor(mean, "mean")
        self.std = _stats_tensor(std, "std")
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.device not in self._on:
            self._on[pixels.device] = tuple(to_device_async(t, pixels.device) for t in (self.mean, self.std))
        mean, std = self._on[pixels.device]
        return (pixels - mean) / std


def _stats_tensor(values: Sequence[float], what: str) -> torch.Tensor:
    if len(values) != 3:
        raise ValueError(f"{what} must have 3 values (one per RGB channel), got {tuple(values)}")
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


class PretrainAugment:
    """Random resized crop + horizontal flip + normalisation, batched.

    ``__call__(images uint8 [B, C, H, W], generator) -> float32 [B, 3, img_size, img_size]`` on ``images.device``.
    The crop covers a fraction of the source area drawn from ``crop_scale`` with an aspect ratio log-uniform in
    ``crop_ratio`` (torchvision's rule, with its 10 attempts vectorised and the same center-crop fallback); sampling
    is bilinear with ``align_corners=False``. The random numbers are drawn on the generator's device (a CPU
    generator works for a GPU batch) and then moved to the batch, so the same generator state gives the same crops
    whatever device the images are on. Exactly ``B * (2 * 10 + 3)`` uniforms are drawn per call, whatever the
    options, so the generator stream does not depend on ``hflip``.
    """

    def __init__(
        self,
        img_size: int,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        zoom_out: float = 0.0,
        zoom_out_scale: tuple[float, float] = (1.0, 2.0),
    ) -> None:
        if not 0 <= zoom_out <= 1 or not 1 <= zoom_out_scale[0] <= zoom_out_scale[1]:
            raise ConfigError(f"data.zoom_out must be in [0, 1] and data.zoom_out_scale satisfy 1 <= low <= high, got "
                              f"{zoom_out} and {tuple(zoom_out_scale)}")
        self.zoom_out, self.zoom_out_scale = float(zoom_out), (float(zoom_out_scale[0]), float(zoom_out_scale[1]))
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {tuple(crop_scale)}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ConfigError(f"crop_ratio must satisfy 0 < low <= high, got {tuple(crop_ratio)}")
        self.img_size = int(img_size)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.hflip = hflip
        self.normalise = _Normalise(mean, std)
        self.mean, self.std = self.normalise.mean, self.normalise.std

    def crop_boxes(self, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """float ``[B, 5]`` on the generator's device: ``(x0, y0, crop_width, crop_height, flip)`` in pixels."""
        uniforms = torch.rand(batch, 2 * _CROP_ATTEMPTS + 3, generator=generator, device=generator.device)
        area_u, ratio_u = uniforms[:, :_CROP_ATTEMPTS], uniforms[:, _CROP_ATTEMPTS : 2 * _CROP_ATTEMPTS]
        x_u, y_u, flip_u = uniforms[:, -3], uniforms[:, -2], uniforms[:, -1]

        low, high = self.crop_scale
        log_low, log_high = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        target_area = height * width * (low + (high - low) * area_u)
        aspect = torch.exp(log_low + (log_high - log_low) * ratio_u)
        crop_w = torch.sqrt(target_area * aspect)
        crop_h = torch.sqrt(target_area / aspect)
        valid = (crop_w <= width) & (crop_h <= height)
        # The first valid attempt per sample; argmax over a 0/1 tensor returns the first 1.
        first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
        crop_w = crop_w.gather(1, first).squeeze(1)
        crop_h = crop_h.gather(1, first).squeeze(1)

        # torchvision's fallback: the largest centred crop, ratio clamped.
        source_ratio = width / height
        if source_ratio < self.crop_ratio[0]:
            fallback_w, fallback_h = float(width), width / self.crop_ratio[0]
        elif source_ratio > self.crop_ratio[1]:
            fallback_w, fallback_h = height * self.crop_ratio[1], float(height)
        else:
            fallback_w, fallback_h = float(width), float(height)
        any_valid = valid.any(dim=1)
        crop_w = torch.where(any_valid, crop_w, torch.full_like(crop_w, fallback_w))
        crop_h = torch.where(any_valid, crop_h, torch.full_like(crop_h, fallback_h))
        x0 = torch.where(any_valid, x_u * (width - crop_w), (width - crop_w) / 2)
        y0 = torch.where(any_valid, y_u * (height - crop_h), (height - crop_h) / 2)
        flip = (flip_u < 0.5).float() if self.hflip else torch.zeros_like(flip_u)
        boxes = torch.stack([x0, y0, crop_w, crop_h, flip], dim=1)
        return self._zoom_out(boxes, height, width, generator) if self.zoom_out else boxes

    def _zoom_out(self, boxes: torch.Tensor, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """A ``zoom_out`` share of the boxes become a canvas ``f`` times the picture's side (f in ``zoom_out_scale``)
        with the whole picture at a random place inside: small objects, as in a scene (SSD's "expand")."""
        pick_u, scale_u, x_u, y_u = torch.rand(4, boxes.shape[0], generator=generator, device=generator.device)
        low, high = self.zoom_out_scale
        factor = low + (high - low) * scale_u
        canvas_w, canvas_h = factor * width, factor * height
        zoomed = torch.stack([-(canvas_w - width) * x_u, -(canvas_h - height) * y_u, canvas_w, canvas_h,
                              boxes[:, 4]], dim=1)
        return torch.where((pick_u < self.zoom_out).unsqueeze(1), zoomed, boxes)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.crops_and_boxes(images, generator)[0]

    def crops_and_boxes(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops and their boxes ``[B, 5]`` = (x0, y0, width, height, flip) as fractions of the source."""
        pixels = to_unit_float(images)
        batch, channels, height, width = pixels.shape
        boxes = self.crop_boxes(batch, height, width, generator)
        boxes = to_device_async(boxes, pixels.device)  # drawn on the CPU for GPU pixels: the copy must not sync
        x0, y0, crop_w, crop_h, flip = boxes.unbind(dim=1)
        # align_corners=False: +-1 are outer edges, x_in = scale * x_out + center; scale < 0 flips.
        theta = torch.zeros(batch, 2, 3, device=pixels.device)
        theta[:, 0, 0] = (crop_w / width) * (1 - 2 * flip)
        theta[:, 0, 2] = (2 * x0 + crop_w) / width - 1
        theta[:, 1, 1] = crop_h / height
        theta[:, 1, 2] = (2 * y0 + crop_h) / height - 1
        grid = F.affine_grid(theta, [batch, channels, self.img_size, self.img_size], align_corners=False)
        # Grayscale is sampled as one channel and only expanded afterwards: a third of the work.
        # Zoomed-out canvases are black outside the picture; plain crops never leave it.
        padding = "zeros" if self.zoom_out else "border"
        crops = F.grid_sample(pixels, grid, mode="bilinear", padding_mode=padding, align_corners=False)
        scale = torch.tensor([width, height, width, height, 1.0], device=boxes.device)
        return self.normalise(crops), boxes / scale


class EvalTransform:
    """Deterministic resize (+ center crop) and normalisation, batched.

    ``__call__(images uint8 [B, C, H, W]) -> float32 [B, 3, img_size, img_size]`` on ``images.device``. Sources whose
    shorter side exceeds ``crop_min_size`` px (image folders) are center-cropped to ``crop_fraction`` of the shorter
    side first, as timm evaluates ImageNet; small datasets (8, 28, 32 px) are resized whole, since cropping would
    cut away digits and objects that fill the frame. Resizing is bilinear with antialiasing.
    """

    def __init__(
        self,
        img_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_fraction: float = 0.875,
        crop_min_size: int = 64,
    ) -> None:
        if not 0 < crop_fraction <= 1:
            raise ConfigError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.img_size = int(img_size)
        self.crop_fraction = float(crop_fraction)
        self.crop_min_size = int(crop_min_size)
        self.normalise = _Normalise(mean, std)
        self.mean, self.std = self.normalise.mean, self.normalise.std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = to_unit_float(images)
        height, width = pixels.shape[-2:]
        if min(height, width) > self.crop_min_size:
            side = max(1, round(min(height, width) * self.crop_fraction))
            top, left = (height - side) // 2, (width - side) // 2
            pixels = pixels[:, :, top : top + side, left : left + side]
        if tuple(pixels.shape[-2:]) != (self.img_size, self.img_size):
            pixels = F.interpolate(
                pixels, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=True
            )
        return self.normalise(pixels)
