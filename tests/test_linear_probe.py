"""Linear probes: batched lr sweep (accuracy, selection, equivalence to torch.optim.SGD) and logistic regression."""

import math

import pytest
import torch
import torch.nn.functional as F

from hjepa.evaluation.linear_probe import cosine_schedule, linear_probe, logreg_probe, stratified_split


def blobs(per_class=100, num_classes=4, dim=32, spread=1.0, seed=0, class_ids=None):
    """Gaussian blobs (std ``spread``) around random centres ~8 apart: separable with high probability at spread 1."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 8.0 / math.sqrt(2 * dim)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator) + 3.0  # offset: tests std
    if class_ids is not None:
        labels = torch.tensor(class_ids)[labels]
    order = torch.randperm(len(labels), generator=generator)
    return features[order], labels[order]


@pytest.fixture(scope="module")
def data():
    train, train_labels = blobs(per_class=100, seed=0)
    test, test_labels = blobs(per_class=25, seed=0)  # same centres (same seed), fresh noise
    return train, train_labels, test[:100], test_labels[:100]


def test_sweep_separates_blobs_and_picks_a_working_lr(data):
    result = linear_probe(*data, lrs=[1e-5, 1e-2, 1e-1], epochs=15, batch_size=64, seed=0)
    assert result["top1"] > 95.0
    assert result["top5"] == 100.0  # 4 classes: top-5 covers them all
    assert set(result["val_top1_per_lr"]) == {1e-5, 1e-2, 1e-1}
    assert result["best_lr"] != 1e-5  # 15 epochs at lr 1e-5 barely move the N(0, 0.01) initial weights
    best = result["val_top1_per_lr"][result["best_lr"]]
    assert best == max(result["val_top1_per_lr"].values())
    assert result["val_loss_per_lr"][1e-5] > result["val_loss_per_lr"][result["best_lr"]]
    assert (result["train_size"], result["val_size"], result["test_size"]) == (360, 40, 100)


def test_each_sweep_slice_trains_like_plain_sgd(data):
    """A sweep's slice equals nn.Linear + torch.optim.SGD(momentum=0.9) + cosine LambdaLR on the same batches."""
    train, labels, test, test_labels = data
    lr, epochs, batch_size, weight_decay, seed = 0.05, 3, 50, 1e-3, 7
    swept = linear_probe(
        train,
        labels,
        test,
        test_labels,
        lrs=[lr, 0.3],
        epochs=epochs,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
    )

    train_rows, val_rows = stratified_split(labels, 0.1, seed)
    x, y, x_val, y_val = train[train_rows], labels[train_rows], train[val_rows], labels[val_rows]
    mean, std = x.mean(0), x.std(0)
    x, x_val = (x - mean) / std, (x_val - mean) / std
    model = torch.nn.Linear(32, 4)
    with torch.no_grad():
        model.weight.copy_((torch.randn(32, 4, generator=torch.Generator().manual_seed(seed)) * 0.01).t())
        model.bias.zero_()
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "weight_decay": weight_decay}, {"params": [model.bias], "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
    )
    total = epochs * math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    order_generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        permutation = torch.randperm(len(x), generator=order_generator)
        for start in range(0, len(x), batch_size):
            batch = permutation[start : start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            scheduler.step()
    with torch.no_grad():
        expected_loss = float(F.cross_entropy(model(x_val), y_val))
    assert swept["val_loss_per_lr"][lr] == pytest.approx(expected_loss, rel=1e-4)
    # Adding an lr to the sweep leaves the others' classifiers unchanged.
    alone = linear_probe(
        train,
        labels,
        test,
        test_labels,
        lrs=[lr],
        epochs=epochs,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
    )
    assert alone["val_loss_per_lr"][lr] == pytest.approx(swept["val_loss_per_lr"][lr], rel=1e-5)


def test_stratified_split_is_seeded_and_balanced():
    labels = torch.arange(5).repeat_interleave(20)
    train_rows, val_rows = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(val_rows, stratified_split(labels, 0.1, seed=3)[1])
    assert not torch.equal(val_rows, stratified_split(labels, 0.1, seed=4)[1])
    assert torch.bincount(labels[val_rows]).tolist() == [2] * 5
    assert sorted(train_rows.tolist() + val_rows.tolist()) == list(range(100))
    # A class with one row keeps it for training.
    _, val_rows = stratified_split(torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 1, 1]), 0.5, seed=0)
    assert 0 not in val_rows.tolist()


def test_cosine_schedule_starts_at_one_and_decays_to_zero():
    schedule = cosine_schedule(10)
    assert schedule[0] == 1.0 and schedule.shape == (10,)
    assert (schedule[1:] < schedule[:-1]).all() and 0 < schedule[-1] < 0.05


def test_logreg_separates_blobs_with_non_contiguous_class_ids():
    train, labels = blobs(per_class=60, seed=2, class_ids=[0, 2, 5, 9])
    test, test_labels = blobs(per_class=15, seed=2, class_ids=[0, 2, 5, 9])
    result = logreg_probe(train.numpy(), labels.numpy(), test, test_labels, C=1.0)
    assert result["top1"] > 95.0 and result["top5"] == 100.0
    assert (result["train_size"], result["test_size"]) == (240, 60)


def test_logreg_top5_is_below_100_with_many_overlapping_classes():
    train, labels = blobs(per_class=10, num_classes=12, dim=8, spread=8.0, seed=3)
    test, test_labels = blobs(per_class=5, num_classes=12, dim=8, spread=8.0, seed=3)
    result = logreg_probe(train, labels, test, test_labels, max_iter=200)
    assert result["top1"] <= result["top5"] < 100.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"val_fraction": 0.0}, "val_fraction"), ({"lrs": []}, "lrs"), ({"num_classes": 2}, "num_classes=2")],
)
def test_probe_rejects_bad_settings(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        linear_probe(*data, epochs=1, **kwargs)


@pytest.mark.parametrize("per_class", [3, 4, 5])
def test_stratified_split_holds_out_the_fraction_with_few_rows_per_class(per_class):
    # CIFAR-100 with --train-limit 500 has 5 rows per class: round(0.1 * 5) is 0 in every class, yet 10 % of 500
    # rows (50) can be held out while every class keeps training rows.
    labels = torch.arange(100).repeat_interleave(per_class)
    train_rows, val_rows = stratified_split(labels, 0.1, seed=0)
    assert val_rows.numel() == round(0.1 * labels.numel())
    assert torch.bincount(labels[val_rows], minlength=100).max() <= 1  # spread over classes, not piled on a few
    assert torch.bincount(labels[train_rows], minlength=100).min() >= per_class - 1
    assert sorted(train_rows.tolist() + val_rows.tolist()) == list(range(labels.numel()))
    assert torch.equal(val_rows, stratified_split(labels, 0.1, seed=0)[1])


def test_probe_runs_on_a_small_many_class_split():
    train, labels = blobs(per_class=5, num_classes=40, dim=16, seed=1)
    result = linear_probe(train, labels, train[:20], labels[:20], epochs=2, batch_size=64)
    assert (result["train_size"], result["val_size"]) == (180, 20)
