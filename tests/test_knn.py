"""DINO-style weighted k-NN: known answers, weighting, tie rules, chunking, numpy input and multi-k evaluation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hjepa.inference.features.knn import knn_classify, knn_evaluate, knn_neighbours, top_k_accuracy


def dino_reference(train, train_labels, test, k, temperature, num_classes):
    """DINO's eval_knn.knn_classifier scoring, literally (one-hot x weights summed), in float64."""
    train, test = F.normalize(train.double(), dim=1), F.normalize(test.double(), dim=1)
    distances, indices = (test @ train.t()).topk(k, dim=1)
    retrieved = train_labels.view(1, -1).expand(test.shape[0], -1).gather(1, indices)
    one_hot = torch.zeros(test.shape[0] * k, num_classes, dtype=torch.float64)
    one_hot.scatter_(1, retrieved.reshape(-1, 1), 1)
    weights = (distances / temperature).exp()
    return (one_hot.view(test.shape[0], k, num_classes) * weights.view(test.shape[0], k, 1)).sum(1)


def random_problem(num_train=120, num_test=40, dim=16, num_classes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(num_train, dim, generator=generator),
        torch.randint(0, num_classes, (num_train,), generator=generator),
        torch.randn(num_test, dim, generator=generator),
        torch.randint(0, num_classes, (num_test,), generator=generator),
    )


def test_matches_dino_reference_on_random_features():
    train, labels, test, _ = random_problem()
    scores = knn_classify(train, labels, test, k=10, temperature=0.07, num_classes=7)
    reference = dino_reference(train, labels, test, 10, 0.07, 7)
    assert scores.shape == (40, 7) and scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), reference, rtol=1e-4, atol=0.0)


def test_clustered_points_are_classified_by_cluster():
    generator = torch.Generator().manual_seed(1)
    centres = torch.eye(8)[:4] * 5.0  # 4 well-separated directions
    train_labels = torch.arange(4).repeat_interleave(10)
    train = centres[train_labels] + 0.3 * torch.randn(40, 8, generator=generator)
    test_labels = torch.tensor([3, 0, 2, 1, 1, 0])
    test = centres[test_labels] + 0.3 * torch.randn(6, 8, generator=generator)
    scores = knn_classify(train, train_labels, test, k=5)
    assert torch.equal(scores.argmax(dim=1), test_labels)


def five_neighbour_problem():
    """Test point at angle 0; class 0 has two train points at +-0.1 rad, class 1 three at +-0.45 / 0.5 rad."""
    angles = torch.tensor([0.1, -0.1, 0.45, -0.45, 0.5])
    train = torch.stack([angles.cos(), angles.sin()], dim=1)
    return train, torch.tensor([0, 0, 1, 1, 1]), torch.tensor([[1.0, 0.0]]), angles


def test_weighting_near_minority_wins_at_small_temperature():
    train, labels, test, angles = five_neighbour_problem()
    scores = knn_classify(train, labels, test, k=5, temperature=0.07)
    assert int(scores.argmax()) == 0
    expected_class0 = 2 * math.exp(math.cos(0.1) / 0.07)
    assert scores[0, 0].item() == pytest.approx(expected_class0, rel=1e-5)


def test_weighting_far_majority_wins_at_large_temperature():
    train, labels, test, _ = five_neighbour_problem()
    scores = knn_classify(train, labels, test, k=5, temperature=10.0)
    assert int(scores.argmax()) == 1
    # With k=2 only the two near class-0 points vote, whatever the temperature.
    assert int(knn_classify(train, labels, test, k=2, temperature=10.0).argmax()) == 0


def test_tiny_temperature_stays_finite_and_ranks_like_float64():
    train, labels, test, _ = random_problem(seed=3)
    scores = knn_classify(train, labels, test, k=20, temperature=0.005, num_classes=7)
    assert torch.isfinite(scores).all()
    reference = dino_reference(train, labels, test, 20, 0.005, 7)
    assert torch.equal(scores.argmax(1), reference.argmax(1))


@pytest.mark.parametrize("labels", [[0, 1], [1, 0]])
def test_equal_class_scores_go_to_lowest_class_index(labels):
    # Both train points are at exactly the same cosine similarity (1/sqrt 2) to the test point.
    train = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    scores = knn_classify(train, torch.tensor(labels), torch.tensor([[1.0, 0.0]]), k=2)
    assert scores[0, 0] == scores[0, 1]
    assert int(scores.argmax()) == 0
    accuracy = top_k_accuracy(scores, torch.tensor([1]), (1, 5))
    assert accuracy == {1: 0.0, 5: 100.0}


def test_tied_neighbours_prefer_lowest_train_index_in_order():
    # Rows 2..6 are identical, so their similarity to any test point ties exactly.
    generator = torch.Generator().manual_seed(4)
    train = torch.randn(12, 6, generator=generator)
    train[2:7] = train[2]
    test = train[2:3] + 1e-3 * torch.randn(1, 6, generator=generator)
    similarities, indices = knn_neighbours(train, test, k=3)
    assert indices.tolist() == [[2, 3, 4]]
    assert (similarities[0, 1:] == similarities[0, 0]).all()
    _, more = knn_neighbours(train, test, k=6)
    assert more[0, :5].tolist() == [2, 3, 4, 5, 6]


def test_tie_at_the_k_boundary_keeps_lowest_train_indices():
    # 2,900 rows orthogonal to the test point (similarity exactly 0) then 100 parallel rows: with k=150 the last
    # 50 neighbours are picked among 2,900 exact ties. Raw torch.topk picks high indices here on CPU.
    train = torch.cat([torch.tensor([[0.0, 1.0]]).expand(2900, 2), torch.tensor([[1.0, 0.0]]).expand(100, 2)])
    similarities, indices = knn_neighbours(train, torch.tensor([[1.0, 0.0]]), k=150)
    assert indices[0, :100].tolist() == list(range(2900, 3000))
    assert indices[0, 100:].tolist() == list(range(50))
    assert (similarities[0, 100:] == 0).all()


def test_chunking_changes_nothing_but_matmul_rounding():
    train, labels, test, _ = random_problem(num_test=37)
    whole_similarities, whole_indices = knn_neighbours(train, test, k=7, chunk_size=1000)
    similarities, indices = knn_neighbours(train, test, k=7, chunk_size=5)
    assert torch.equal(indices, whole_indices)
    torch.testing.assert_close(similarities, whole_similarities, rtol=1e-6, atol=1e-6)
    whole = knn_classify(train, labels, test, k=7, chunk_size=1000)
    chunked = knn_classify(train, labels, test, k=7, chunk_size=5)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=0.0)
    assert torch.equal(chunked.argmax(1), whole.argmax(1))


def test_numpy_input_gives_the_same_scores():
    train, labels, test, _ = random_problem()
    expected = knn_classify(train, labels, test, k=5)
    scores = knn_classify(train.numpy().astype(np.float64), labels.numpy().astype(np.int32), test.numpy(), k=5)
    torch.testing.assert_close(scores, expected)


def test_top5_follows_the_documented_rank_rule():
    train, labels, test, test_labels = random_problem(num_classes=10, seed=5)
    labels, test_labels = labels % 10, test_labels % 10
    scores = knn_classify(train, labels, test, k=3, num_classes=10)  # <= 3 classes get votes: many zero-score ties
    label_scores = scores.gather(1, test_labels.view(-1, 1))
    classes = torch.arange(10).view(1, -1)
    rank = (scores > label_scores).sum(1) + ((scores == label_scores) & (classes < test_labels.view(-1, 1))).sum(1)
    voted = (label_scores.squeeze(1) > 0)  # a class without a vote is never a hit, whatever its index
    result = knn_evaluate(train, labels, test, test_labels, ks=[3], num_classes=10)[3]
    assert result["top5"] == pytest.approx(100.0 * float(((rank < 5) & voted).float().mean()))
    assert result["top1"] == pytest.approx(100.0 * float((rank == 0).float().mean()))
    assert result["top5"] > result["top1"]


def test_evaluate_many_k_equals_separate_calls_even_with_duplicates():
    train, labels, test, test_labels = random_problem(num_train=80, seed=6)
    train = torch.cat([train, train[:30]])  # exact duplicates with other labels: neighbour ties at every k
    labels = torch.cat([labels, (labels[:30] + 1) % 7])
    test = torch.cat([test, train[:10]])
    test_labels = torch.cat([test_labels, labels[:10]])
    joint = knn_evaluate(train, labels, test, test_labels, ks=[1, 4, 5, 20])
    assert list(joint) == [1, 4, 5, 20]
    for k in (1, 4, 5, 20):
        assert joint[k] == knn_evaluate(train, labels, test, test_labels, ks=[k])[k]
        top1 = knn_classify(train, labels, test, k=k).argmax(1).eq(test_labels).float().mean() * 100
        assert joint[k]["top1"] == pytest.approx(float(top1))


def test_k_larger_than_train_set_is_clamped_with_warning():
    train, labels, test, test_labels = random_problem(num_train=9)
    with pytest.warns(UserWarning, match="k=50 exceeds the 9 train features"):
        scores = knn_classify(train, labels, test, k=50, num_classes=7)
    assert torch.equal(scores, knn_classify(train, labels, test, k=9, num_classes=7))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_features": torch.zeros(3, 5)}, "dim 5"),
        ({"num_classes": 2}, "num_classes=2"),
        ({"train_labels": -torch.ones(10, dtype=torch.long)}, "negative"),
        ({"train_labels": torch.zeros(10)}, "integer"),
        ({"train_features": torch.full((10, 4), float("nan"))}, "NaN"),
        ({"k": 0}, "k must be >= 1"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, message):
    arguments = {
        "train_features": torch.randn(10, 4),
        "train_labels": torch.arange(10) % 3,
        "test_features": torch.randn(3, 4),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_classify(**arguments)


def test_top5_never_counts_a_class_that_got_no_vote():
    # k=1: the single neighbour votes for class 5, so only class 5 can be a hit. Classes 0..3 have score 0 and must
    # not fill the top 5 by index order (that would credit test images of low-index classes with free hits).
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    train_labels = torch.tensor([5, 7])
    test = torch.tensor([[1.0, 0.1], [1.0, 0.1], [1.0, 0.1]])
    test_labels = torch.tensor([0, 5, 7])
    result = knn_evaluate(train, train_labels, test, test_labels, ks=[1], num_classes=10)[1]
    assert result == {"top1": pytest.approx(100 / 3), "top5": pytest.approx(100 / 3)}
    # k=2: classes 5 and 7 both vote, so the label-7 row is a top-5 hit too, and the label-0 row still is not.
    result = knn_evaluate(train, train_labels, test, test_labels, ks=[2], num_classes=10)[2]
    assert result == {"top1": pytest.approx(100 / 3), "top5": pytest.approx(200 / 3)}


def test_clamped_k_is_recorded_in_the_result():
    # A report row "knn@20" computed from a 9-image bank used k=9: the result must say so, not only a warning.
    train, labels, test, test_labels = random_problem(num_train=9)
    with pytest.warns(UserWarning, match="k=20 exceeds"):
        result = knn_evaluate(train, labels, test, test_labels, ks=[5, 20], num_classes=7)
    assert "k_used" not in result[5]
    assert result[20]["k_used"] == 9
    assert result[20]["top1"] == knn_evaluate(train, labels, test, test_labels, ks=[9], num_classes=7)[9]["top1"]
