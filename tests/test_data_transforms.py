"""Batched seeded transforms: shapes, ranges, grayscale expansion, determinism, flips and crops."""

from __future__ import annotations

import pytest
import torch

from hjepa.data import EvalTransform, PretrainAugment, batch_generator

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def random_images(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, channels, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def unnormalise(output: torch.Tensor) -> torch.Tensor:
    return output * STD[0] + MEAN[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_pretrain_augment_shape_range_and_channels(channels: int) -> None:
    augment = PretrainAugment(16, mean=MEAN, std=STD)
    output = augment(random_images(6, channels, 28, 20), batch_generator(0, 0))
    assert output.shape == (6, 3, 16, 16) and output.dtype == torch.float32
    pixels = unnormalise(output)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    if channels == 1:  # grayscale expanded: the three channels are equal
        assert torch.equal(output[:, 0], output[:, 1]) and torch.equal(output[:, 0], output[:, 2])


def test_pretrain_augment_is_seeded() -> None:
    augment = PretrainAugment(12, mean=MEAN, std=STD)
    images = random_images(8, 3, 32, 32)
    first = augment(images, batch_generator(3, 17))
    again = augment(images, batch_generator(3, 17))
    other_step = augment(images, batch_generator(3, 18))
    other_seed = augment(images, batch_generator(4, 17))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_step) and not torch.allclose(first, other_seed)
    # Per-sample parameters: the same image repeated in a batch gets different crops.
    repeated = augment(images[:1].expand(8, -1, -1, -1), batch_generator(0, 0))
    assert not torch.allclose(repeated[0], repeated[1])


def test_hflip_flips_and_full_crop_is_identity() -> None:
    images = random_images(32, 3, 16, 16)
    augment = PretrainAugment(16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=True, mean=MEAN, std=STD)
    output = unnormalise(augment(images, batch_generator(0, 5)))
    source = images.float() / 255
    same = (output - source).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (output - source.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert torch.all(same ^ flipped)  # every sample is exactly the image or its mirror image
    assert 4 <= int(flipped.sum()) <= 28  # and both happen (p = 0.5 each)
    no_flip = PretrainAugment(16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False, mean=MEAN, std=STD)
    assert torch.allclose(unnormalise(no_flip(images, batch_generator(0, 5))), source, atol=1e-5)


def test_crop_boxes_follow_scale_and_ratio() -> None:
    augment = PretrainAugment(8, crop_scale=(0.2, 0.5), crop_ratio=(0.5, 2.0))
    boxes = augment.crop_boxes(2000, 40, 60, torch.Generator().manual_seed(0))
    x0, y0, width, height, flip = boxes.unbind(1)
    area = width * height / (40 * 60)
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 0.5 + 1e-4
    ratio = width / height
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 2.0 + 1e-4
    assert x0.min() >= 0 and (x0 + width).max() <= 60 + 1e-3 and y0.min() >= 0 and (y0 + height).max() <= 40 + 1e-3
    assert set(flip.unique().tolist()) == {0.0, 1.0}


def test_crop_zooms_into_the_right_region() -> None:
    # Left half black, right half white: a crop of the left part must come out darker than one of the right part.
    image = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    image[..., 16:] = 255
    augment = PretrainAugment(8, crop_scale=(0.1, 0.1), crop_ratio=(1.0, 1.0), hflip=False, mean=MEAN, std=STD)
    boxes = augment.crop_boxes(64, 32, 32, batch_generator(1, 1))
    output = unnormalise(augment(image.expand(64, -1, -1, -1), batch_generator(1, 1)))
    left = (boxes[:, 0] + boxes[:, 2]) < 15  # crop wholly in the black half
    right = boxes[:, 0] > 17
    assert left.any() and right.any()
    assert output[left].max() < 1e-5 and output[right].min() > 1 - 1e-5


def test_eval_transform_resizes_small_and_crops_large() -> None:
    transform = EvalTransform(16, mean=MEAN, std=STD)
    small = random_images(3, 1, 8, 8)
    output = transform(small)
    assert output.shape == (3, 3, 16, 16) and output.dtype == torch.float32
    assert torch.equal(output[:, 0], output[:, 2])
    same_size = unnormalise(EvalTransform(8, mean=MEAN, std=STD)(small))
    assert torch.allclose(same_size[:, :1], small.float() / 255, atol=1e-6)  # nothing to resize or crop

    large = random_images(2, 3, 128, 128)
    large[..., :8] = 0  # a dark border that the 0.875 center crop removes
    cropped = unnormalise(EvalTransform(112, mean=MEAN, std=STD)(large))
    assert torch.allclose(cropped, large[:, :, 8:120, 8:120].float() / 255, atol=1e-6)
    assert torch.equal(transform(large), transform(large))
    with pytest.raises(ValueError, match="uint8 image batch"):
        transform(large.float())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pretrain_augment_cpu_generator_on_cuda_batch() -> None:
    augment = PretrainAugment(16, mean=MEAN, std=STD)
    images = random_images(4, 3, 32, 32)
    on_cpu = augment(images, batch_generator(0, 1))
    on_gpu = augment(images.cuda(), batch_generator(0, 1))
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_cpu, on_gpu.cpu(), atol=1e-4)
