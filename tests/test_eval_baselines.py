"""Baseline rows: raw pixels (checked against a plain numpy k-NN) and random init, side by side with the model."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from hjepa.cli.evaluate import main as eval_main
from hjepa.data import EvalTransform, build_dataset, dataset_stats
from hjepa.evaluation.baselines import PixelSource, evaluate_with_baselines


def _numpy_knn_top1(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                    k: int = 20, temperature: float = 0.07) -> float:
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    correct = 0
    for row, label in zip(test @ train.T, test_labels, strict=True):
        nearest = np.argsort(-row, kind="stable")[:k]
        votes = np.zeros(10)
        np.add.at(votes, train_labels[nearest], np.exp(row[nearest] / temperature))
        correct += int(np.argmax(votes) == label)
    return 100.0 * correct / len(test_labels)


def _pixels(split: str, img_size: int) -> tuple[np.ndarray, np.ndarray]:
    data = build_dataset("digits", split)
    images, labels = data.tensors()
    mean, std = dataset_stats("digits")
    flat = EvalTransform(img_size, mean=mean, std=std)(images).flatten(1).double().numpy()
    return flat - flat.mean(1, keepdims=True), labels.numpy()


def test_pixel_baseline_equals_a_plain_numpy_knn():
    mean, std = dataset_stats("digits")
    report = evaluate_with_baselines(PixelSource(16, mean, std), "digits", levels=[0], protocols=("knn",), ks=[20],
                                     temperature=0.07, progress=False)
    expected = _numpy_knn_top1(*_pixels("train", 16), *_pixels("test", 16))
    assert abs(report["levels"]["0"]["knn"]["20"]["top1"] - expected) < 1e-6
    assert report["kind"] == "pixels" and report["model"]["img_size"] == 16


def test_pixel_features_are_centred_flattened_images():
    import torch

    source = PixelSource(4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images = torch.rand(3, 3, 4, 4)
    features = source.embed_pooled(images, 0)
    assert features.shape == (3, 48)
    assert torch.allclose(features.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(features, images.flatten(1) - images.flatten(1).mean(1, keepdim=True))


def test_grey_pictures_keep_one_channel_and_the_same_cosines():
    import torch

    source = PixelSource(4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    grey = torch.rand(5, 1, 4, 4).expand(5, 3, 4, 4)
    features = source.embed_pooled(grey, 0)
    full = grey.flatten(1) - grey.flatten(1).mean(1, keepdim=True)
    assert features.shape == (5, 16)
    cosines = torch.nn.functional.normalize(features, dim=1) @ torch.nn.functional.normalize(features, dim=1).T
    expected = torch.nn.functional.normalize(full, dim=1) @ torch.nn.functional.normalize(full, dim=1).T
    assert torch.allclose(cosines, expected, atol=1e-6)


def test_cli_shows_model_pixels_and_random_init_rows(tiny_checkpoint, tmp_path):
    out = tmp_path / "report.json"
    args = ["knn", str(tiny_checkpoint), "--dataset", "digits", "--level", "0", "--baseline", "pixels",
            "--baseline", "random-init", "--no-cache", "--no-progress", "--out", str(out)]
    result = CliRunner().invoke(eval_main, args)
    assert result.exit_code == 0, result.output
    table = [line.split() for line in result.output.splitlines()]
    names = [row[0] for row in table if row and row[0] in ("model", "pixels", "random-init")]
    assert names == ["model", "pixels", "random-init"]
    report = json.loads(out.read_text())
    assert set(report["baselines"]) == {"pixels", "random-init"}
    pixels = report["baselines"]["pixels"]
    assert pixels["splits"] == report["splits"]  # the same splits as the model's row
    assert pixels["model"]["img_size"] == report["model"]["img_size"]  # the model's own preprocessing
    random_init = report["baselines"]["random-init"]["levels"]["0"]["knn"]["20"]["top1"]
    assert 0 <= random_init <= 100


def test_unknown_baseline_is_refused(tiny_checkpoint):
    result = CliRunner().invoke(eval_main, ["knn", str(tiny_checkpoint), "--dataset", "digits", "--baseline", "x"])
    assert result.exit_code != 0 and "pixels" in result.output
