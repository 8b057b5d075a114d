"""PCA-to-RGB and similarity maps, and the image helpers that map clicks to patches (numpy only, no model)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hjepa.inference.runtimes.images import (
    ImageError,
    batch_to_list,
    center_crop_resize,
    point_to_unit,
    read_image,
    to_rgb_array,
    unit_to_cell,
)
from hjepa.serve.maps import (
    cell_edges,
    colourise,
    cosine_similarity_map,
    pca_rgb,
    similarity_overlay,
    upscale_nearest,
)


def two_clusters(
    rng: np.random.Generator, grid: tuple[int, int] = (4, 6), dim: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of a grid whose left half sits around one vector and right half around another."""
    count = grid[0] * grid[1]
    left = (np.arange(count) % grid[1]) < grid[1] // 2
    centres = rng.normal(size=(2, dim)) * 5.0
    tokens = np.where(left[:, None], centres[0], centres[1]) + rng.normal(size=(count, dim)) * 0.1
    return tokens.astype(np.float32), left


def test_pca_rgb_shape_range_and_first_component_separates_clusters() -> None:
    tokens, left = two_clusters(np.random.default_rng(0))
    rgb = pca_rgb(tokens, (4, 6))
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
    assert rgb.min() >= 0 and rgb.max() <= 255
    red = rgb[..., 0].reshape(-1).astype(int)
    # The clusters differ along the first principal component, so red alone tells them apart, at the two ends.
    assert abs(red[left].mean() - red[~left].mean()) > 200
    assert red[left].std() < 20 and red[~left].std() < 20
    # The second and third components only hold noise: they do not separate the clusters the way red does.
    for channel in (1, 2):
        values = rgb[..., channel].reshape(-1).astype(int)
        assert abs(values[left].mean() - values[~left].mean()) < 200


def test_pca_rgb_is_deterministic_under_sign_and_batched_fit() -> None:
    tokens, _ = two_clusters(np.random.default_rng(1))
    single = pca_rgb(tokens, (4, 6))
    assert np.array_equal(single, pca_rgb(tokens.copy(), (4, 6)))
    batch = pca_rgb(np.stack([tokens, tokens]), (4, 6))
    assert batch.shape == (2, 4, 6, 3)
    assert np.array_equal(batch[0], batch[1])


def test_pca_rgb_degenerate_inputs_are_grey_not_nan() -> None:
    constant = np.ones((16, 8), np.float32)
    assert np.all(pca_rgb(constant, (4, 4)) == 128)
    one_token = pca_rgb(np.ones((1, 8)), (1, 1))
    assert one_token.shape == (1, 1, 3)
    with pytest.raises(ValueError, match="do not fill"):
        pca_rgb(np.ones((15, 8)), (4, 4))


def test_cosine_similarity_map_selected_patch_is_one_and_max() -> None:
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(20, 12)).astype(np.float32)
    for index in (0, 7, 19):
        similarity = cosine_similarity_map(tokens, index)
        assert similarity.shape == (20,) and similarity.dtype == np.float32
        assert similarity[index] == pytest.approx(1.0, abs=1e-6)
        assert int(np.argmax(similarity)) == index
        assert similarity.min() >= -1.0
    # A token pointing the opposite way has similarity -1.
    tokens[3] = -tokens[5] * 2.0
    assert cosine_similarity_map(tokens, 5)[3] == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(IndexError):
        cosine_similarity_map(tokens, 20)


def test_colourise_and_upscale_keep_cells_flat() -> None:
    values = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    colours = colourise(values)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert not np.array_equal(colours[0, 0], colours[0, 1])
    big = upscale_nearest(colours, 10)
    assert big.shape == (10, 10, 3)
    edges = cell_edges(2, 10)
    assert edges.tolist() == [0, 5, 10]
    assert np.all(big[:5, :5] == colours[0, 0]) and np.all(big[5:, 5:] == colours[1, 1])
    # Grids that do not divide the size: every pixel still belongs to the cell the edges say.
    odd = upscale_nearest(np.arange(3, dtype=np.uint8).reshape(1, 3, 1), 7)
    col_edges = cell_edges(3, 7)
    for cell in range(3):
        assert np.all(odd[0, col_edges[cell] : col_edges[cell + 1], 0] == cell)


def test_similarity_overlay_outlines_the_selected_cell() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    similarity = np.zeros((4, 4), np.float32)
    similarity[1, 2] = 1.0
    overlay = similarity_overlay(image, similarity, (1, 2))
    assert overlay.shape == (64, 64, 3)
    assert tuple(overlay[16, 40]) == (255, 40, 40)  # top edge of cell (1, 2) spans rows 16.., cols 32..48
    assert tuple(overlay[0, 0]) != (255, 40, 40)


def test_center_crop_and_click_mapping() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # the center square is white, the sides black
    crop = center_crop_resize(image, 20)
    assert crop.shape == (20, 20, 3) and crop.min() == 255
    assert point_to_unit(10, 50, 100, 200) is None  # in the left margin the model never sees
    u, v = point_to_unit(149.9, 0, 100, 200)
    assert u == pytest.approx(0.999, abs=1e-3) and v == 0
    assert unit_to_cell(u, v, (4, 4)) == (0, 3)
    assert unit_to_cell(0.5, 0.5, (2, 2)) == (1, 1)


def test_image_inputs_in_every_form(tmp_path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_rgb_array(gray).shape == (3, 4, 3)
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 255))
    assert to_rgb_array(rgba)[0, 0].tolist() == [10, 20, 30]
    assert to_rgb_array(np.full((2, 2, 3), 0.5)).max() == 128
    path = tmp_path / "a.png"
    Image.fromarray(np.full((6, 7, 3), 9, np.uint8)).save(path)
    assert read_image(path).shape == (6, 7, 3)
    assert len(batch_to_list(np.zeros((3, 8, 8, 3), np.uint8))) == 3
    import torch

    assert batch_to_list(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))[0].shape == (8, 8, 1)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_image(bad)
    with pytest.raises(ImageError, match="upload limit"):
        read_image(path, max_bytes=10)
    with pytest.raises(ImageError):
        to_rgb_array(np.zeros((4, 4, 2), np.uint8))
