"""Dense evaluation: mosaics, the probes' maths, ``hjepa-eval dense`` on mosaics and on a VOC-layout folder."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from hjepa.cli.evaluate import main
from hjepa.data.mosaics import BACKGROUND, IGNORE, make_mosaics
from hjepa.evaluation.dense import (
    DenseOptions,
    cell_histograms,
    mean_iou,
    segmentation_probe,
    tile_features,
    upsample_weights,
)


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_mosaics_place_each_image_in_its_tile_with_pixel_labels():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    images[:, :, 1:3, 1:3] = torch.tensor([50, 100, 200], dtype=torch.uint8).view(3, 1, 1, 1)
    labels = torch.tensor([0, 1, 2])
    mosaics = make_mosaics(images, labels, num_classes=3, count=20, layout=2, canvas=8, seed=3, empty_fraction=0.3)
    assert mosaics.images.shape == (20, 1, 8, 8) and mosaics.pixel_labels.shape == (20, 8, 8)
    assert mosaics.num_classes == 4 and mosaics.tile_labels.shape == (20, 2, 2)
    assert (mosaics.tile_labels == -1).any() and (mosaics.tile_labels >= 0).any()
    for m in range(20):
        for i in range(2):
            for j in range(2):
                tile = mosaics.pixel_labels[m, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                pixels = mosaics.images[m, 0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                label = int(mosaics.tile_labels[m, i, j])
                if label < 0:
                    assert (tile == BACKGROUND).all() and (pixels == 0).all()
                else:  # the bright centre is the class, the dark frame background
                    assert (tile[1:3, 1:3] == label + 1).all() and tile[0].eq(BACKGROUND).all()
                    assert int(pixels[1, 1]) == [50, 100, 200][label]
    again = make_mosaics(images, labels, 3, 20, 2, 8, seed=3, empty_fraction=0.3)
    other = make_mosaics(images, labels, 3, 20, 2, 8, seed=4, empty_fraction=0.3)
    assert torch.equal(again.images, mosaics.images) and not torch.equal(other.tile_labels, mosaics.tile_labels)


def test_tile_features_average_cells_by_shared_area():
    grid = torch.arange(16, dtype=torch.float32).view(1, 4, 4, 1)
    tiles = tile_features(grid, 2)  # each tile holds a 2x2 block of cells
    assert torch.allclose(tiles[0, :, :, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    coarse = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2, 1)
    fine = tile_features(coarse, 4)  # a cell covers 2x2 tiles: each tile takes its cell's feature
    assert torch.equal(fine[0, :, :, 0], coarse[0, :, :, 0].repeat_interleave(2, 0).repeat_interleave(2, 1))
    uneven = tile_features(torch.tensor([[0.0, 3.0, 6.0]]).view(1, 1, 3, 1).expand(1, 3, 3, 1), 2)
    assert torch.allclose(uneven[0, 0, :, 0], torch.tensor([1.0, 5.0]))  # (0 + 0.5*3) / 1.5, (0.5*3 + 6) / 1.5


def test_upsample_weights_are_bilinear_interpolation():
    cells = torch.randn(2, 3, 4, 4)
    ours = torch.einsum("bcij,iy,jx->bcyx", cells, upsample_weights(4, 16), upsample_weights(4, 16))
    expected = F.interpolate(cells, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_mean_iou_and_histograms():
    counts = torch.tensor([[8, 2, 0], [2, 6, 0], [0, 0, 0]])  # class 2 absent everywhere: left out
    assert mean_iou(counts) == pytest.approx((8 / 12 + 6 / 10) / 2 * 100)
    labels = torch.tensor([[[0, 1, 2, 2], [0, IGNORE, 2, 2], [1, 1, 0, 0], [1, 1, 0, 0]]])
    histograms = cell_histograms(labels, 2, 3)
    assert histograms[0, 0, 0].tolist() == [2, 1, 0] and histograms[0, 0, 1].tolist() == [0, 0, 4]
    assert histograms[0, 1, 0].tolist() == [0, 4, 0] and histograms.sum() == 15


def test_segmentation_probe_learns_separable_cells_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 3, (300, 4, 4), generator=generator)
    labels = classes.repeat_interleave(4, 1).repeat_interleave(4, 2)  # [300, 16, 16]
    informative = F.one_hot(classes, 3).float() + 0.1 * torch.randn(300, 4, 4, 3, generator=generator)
    noise = torch.randn(300, 4, 4, 3, generator=generator)
    options = DenseOptions(seg_epochs=20, batch_size=64)
    good = segmentation_probe((informative[:200], labels[:200]), (informative[200:], labels[200:]), 3, options)
    bad = segmentation_probe((noise[:200], labels[:200]), (noise[200:], labels[200:]), 3, options)
    assert good["miou"] > 60 and bad["miou"] < 40 and good["best_lr"] in options.lrs
    assert good["confusion"].sum() == 100 * 16 * 16


def test_dense_cli_reports_every_level_with_baselines(tiny_checkpoint, tmp_path):
    out = tmp_path / "dense.json"
    result = run("dense", tiny_checkpoint, "--dataset", "digits", "--train-mosaics", "80", "--test-mosaics", "40",
                 "--baseline", "pixels", "--baseline", "random-init", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["data"]["layouts"] == [2, 4] and report["splits"] == {"train": 80, "test": 40}
    for part in (report, report["baselines"]["pixels"], report["baselines"]["random-init"]):
        assert set(part["levels"]) == {"0", "1"}
        for entry in part["levels"].values():
            dense = entry["dense"]
            assert 0 <= dense["miou"] <= 100 and 0 <= dense["tile_top1"] <= 100
            assert set(dense["by_layout"]) == {"2x2", "4x4"}
    assert report["levels"]["0"]["dense"]["grid"] == [4, 4] and report["levels"]["1"]["dense"]["grid"] == [2, 2]
    table = [line.split() for line in result.output.splitlines() if line.split()[:1] in (["model"], ["pixels"])]
    assert len(table) == 4
    assert float(table[0][3]) == pytest.approx(report["levels"]["0"]["dense"]["miou"], abs=0.006)


def _voc_folder(root, count=12, size=24):
    """Pictures split into a red left half (class 1) and a blue right half (class 2), some pixels void."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        split = rng.integers(6, size - 6)
        image = np.zeros((size, size + 4, 3), np.uint8)
        image[:, :split, 0], image[:, split:, 2] = 200, 200
        label = np.ones((size, size + 4), np.uint8)
        label[:, split:] = 2
        label[0, :] = 255
        Image.fromarray(image).save(root / "JPEGImages" / f"im{index}.png")
        Image.fromarray(label, mode="L").save(root / "SegmentationClass" / f"im{index}.png")
    stems = [f"im{index}" for index in range(count)]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems[:8]))
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems[8:]))


def test_dense_cli_on_a_voc_layout_folder(tiny_checkpoint, tmp_path):
    _voc_folder(tmp_path / "voc")
    out = tmp_path / "voc.json"
    result = run("dense", tiny_checkpoint, "--dataset", "voc", "--data-dir", tmp_path / "voc",
                 "--baseline", "pixels", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["num_classes"] == 3 and report["splits"] == {"train": 8, "test": 4}
    pixels = report["baselines"]["pixels"]["levels"]["0"]["dense"]
    assert pixels["miou"] > 50 and "tile_top1" not in pixels  # colour alone separates the halves


def test_dense_cli_errors_are_one_line(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["dense", str(tiny_checkpoint), "--dataset", "voc", "--data-dir",
                                       str(tmp_path)])
    assert result.exit_code != 0
    assert "ImageSets" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["dense", str(tiny_checkpoint), "--dataset", "digits", "--level", "3"])
    assert result.exit_code != 0 and "level" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["dense", str(tiny_checkpoint), "--dataset", "imagenet100"])
    assert result.exit_code != 0 and "mosaics" in result.output


def test_bf16_sources_hash_apart_and_stay_close_to_fp32(tiny_checkpoint):
    from hjepa.evaluation.sources import in_bf16, resolve_source

    images = torch.randn(8, 3, 16, 16)
    fp32 = resolve_source(tiny_checkpoint)
    bf16 = in_bf16(resolve_source(tiny_checkpoint))
    assert bf16.source_hash != fp32.source_hash and bf16.runtime.metadata.precision == "bf16"
    reference, reduced = fp32.embed_pooled(images, 0), bf16.embed_pooled(images, 0)
    assert reduced.dtype == torch.float32 and not torch.equal(reference, reduced)
    assert F.cosine_similarity(reference, reduced).min() > 0.99
