"""Multi-view (multi-crop) augmentation for the multi-view objective: global and local views of every image, batched.

``MultiViewAugment(images uint8 [B, C, H, W], generator) -> Views``: ``num_global`` random resized crops at
``img_size`` (scale ``crop_scale``) and ``num_local`` smaller crops at ``local_img_size`` (scale
``local_crop_scale``), each with its own crop and flip per image, all drawn from one seeded generator in a fixed
order (globals first), so the views of a step are a pure function of ``(seed, step)``. Every view goes through
:class:`PretrainAugment`, one ``grid_sample`` per view on the images' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hjepa.config import ConfigError
from hjepa.data.base import IMAGENET_MEAN, IMAGENET_STD
from hjepa.data.scenes import Scenes, canvas_to_picture
from hjepa.data.transforms import PretrainAugment


@dataclass
class Views:
    """``globals_ [V_g, B, 3, S, S]``, ``locals_ [V_l, B, 3, s, s]`` (``None`` without local views), the global
    crops' ``boxes [V_g, B, 5]`` (``PretrainAugment.crops_and_boxes``, in fractions of the row's picture),
    ``same_picture [B]``: False where the second global view was cut from another picture (neighbour views), so
    crop geometry does not relate them, and ``scene_rows [B]``: True where the views are scenes
    (``data/scenes.py``), so only some of their cells show the picture (None without scenes); with scenes, each global
    view's canvas ``placement [V_g, B, 3]`` and ``tiles [V_g, B, T]`` (``Scenes``), which name the picture under
    every cell (``scenes.cell_tiles``)."""

    globals_: torch.Tensor
    locals_: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    same_picture: torch.Tensor | None = None
    scene_rows: torch.Tensor | None = None
    placement: torch.Tensor | None = None
    tiles: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.globals_.device

    @property
    def num_global(self) -> int:
        return self.globals_.shape[0]

    @property
    def num_local(self) -> int:
        return 0 if self.locals_ is None else self.locals_.shape[0]

    @property
    def batch_size(self) -> int:
        return self.globals_.shape[1]


class MultiViewAugment:
    """Global + local random resized crops with horizontal flips and normalisation; see the module docstring."""

    def __init__(
        self,
        img_size: int,
        num_global: int = 2,
        num_local: int = 0,
        local_img_size: int = 16,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.3),
        hflip: bool = True,
        normalisation: tuple[Sequence[float], Sequence[float]] = (IMAGENET_MEAN, IMAGENET_STD),
        zoom_out: float = 0.0,
        zoom_out_scale: tuple[float, float] = (1.0, 2.0),
    ) -> None:
        if num_global < 1:
            raise ConfigError(f"data.num_global_views must be at least 1, got {num_global}")
        if num_local < 0:
            raise ConfigError(f"data.num_local_views must be >= 0, got {num_local}")
        self.num_global, self.num_local = num_global, num_local
        mean, std = normalisation
        self.global_view = PretrainAugment(img_size, crop_scale=crop_scale, hflip=hflip, mean=mean, std=std,
                                           zoom_out=zoom_out, zoom_out_scale=zoom_out_scale)
        self.local_view = PretrainAugment(local_img_size, crop_scale=local_crop_scale, hflip=hflip, mean=mean, std=std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator, second: torch.Tensor | None = None,
                 scenes: Scenes | None = None) -> Views:
        """``second`` (uint8, like ``images``): the pictures the second global view is cut from (neighbour views,
        ``hjepa.data.neighbours``); ``scenes``: canvases that replace both sources on their rows. Local views
        always come from ``images``."""
        sources = [second if i == 1 and second is not None else images for i in range(self.num_global)]
        if scenes is not None:
            rows = scenes.rows.view(-1, 1, 1, 1)
            sources = [torch.where(rows, scenes.canvases[i], source) for i, source in enumerate(sources)]
        crops, boxes = zip(*(self.global_view.crops_and_boxes(source, generator) for source in sources), strict=True)
        boxes = torch.stack(boxes)
        if scenes is not None:
            boxes = canvas_to_picture(boxes, scenes.placement.to(boxes.device))
        locals_ = None
        if self.num_local:
            locals_ = torch.stack([self.local_view(images, generator) for _ in range(self.num_local)])
        same_picture = None if second is None else (second == images).flatten(1).all(1)
        if scenes is not None and not scenes.neighbours:  # neighbour scenes stay different pictures
            same_picture = scenes.rows if same_picture is None else same_picture | scenes.rows
        if scenes is None:
            return Views(torch.stack(crops), locals_, boxes, same_picture)
        return Views(torch.stack(crops), locals_, boxes, same_picture, scenes.rows, scenes.placement, scenes.tiles)
