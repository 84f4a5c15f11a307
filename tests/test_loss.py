"""The Pearson loss: invariant to scale and shift within a group, NaN-free on constant groups."""

from __future__ import annotations

import torch
from scipy.stats import pearsonr

from surrogate.loss import group_pearson, pearson_loss, top1_divergence


def groups(sizes: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def test_matches_scipy_per_group():
    g = torch.Generator().manual_seed(0)
    pred, label, group = torch.randn(12, generator=g), torch.randn(12, generator=g), groups([5, 7])
    r, valid = group_pearson(pred, label, group, 2)
    assert valid.all()
    for k, (lo, hi) in enumerate([(0, 5), (5, 12)]):
        assert abs(float(r[k]) - pearsonr(pred[lo:hi].numpy(), label[lo:hi].numpy())[0]) < 1e-6


def test_scale_and_shift_invariance_per_group():
    g = torch.Generator().manual_seed(1)
    pred, label, group = torch.randn(10, generator=g), torch.randn(10, generator=g), groups([4, 6])
    base = pearson_loss(pred, label, group, 2)
    scaled = pred.clone()
    scaled[:4] = 3.0 * scaled[:4] + 7.0
    scaled[4:] = 0.01 * scaled[4:] - 2.0
    assert torch.isclose(pearson_loss(scaled, label, group, 2), base, atol=1e-6)
    assert torch.isclose(pearson_loss(label * 5 + 1, label, group, 2), torch.tensor(0.0), atol=1e-6)


def test_constant_groups_are_masked_without_nan():
    pred = torch.randn(9, requires_grad=True)
    label = torch.tensor([1.0, 1.0, 1.0, 0.3, 0.1, 0.9, 2.0, 2.0, 2.0])
    group = groups([3, 3, 3])
    loss = pearson_loss(pred, label, group, 3)
    _, valid = group_pearson(pred, label, group, 3)
    assert valid.tolist() == [False, True, False] and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[:3].abs().sum() == 0

    only_constant = pearson_loss(pred, torch.ones(9), group, 3)
    assert float(only_constant) == 0.0 and only_constant.requires_grad


def test_constant_predictions_do_not_produce_nan():
    loss = pearson_loss(torch.zeros(4, requires_grad=True), torch.tensor([0.0, 1.0, 2.0, 3.0]), groups([4]), 1)
    assert torch.isfinite(loss) and float(loss) == 1.0


def test_top1_divergence_is_zero_at_the_labels_and_scale_free():
    g = torch.Generator().manual_seed(2)
    label, group = torch.randn(11, generator=g), groups([5, 6])
    at_labels = top1_divergence(3.0 * label - 1.0, label, group, 2, 0.5)
    assert torch.allclose(at_labels, torch.zeros(2, dtype=torch.float64), atol=1e-9)
    pred = torch.randn(11, generator=g)
    shifted = pred.clone()
    shifted[:5] = 10.0 * shifted[:5] + 4.0
    kl = top1_divergence(pred, label, group, 2, 0.5)
    assert (kl > 0).all() and torch.allclose(top1_divergence(shifted, label, group, 2, 0.5), kl)


def test_top1_term_prefers_the_prediction_that_gets_the_top_right():
    # Both predictions correlate alike with the labels; only one ranks the best candidate first.
    label, group = torch.tensor([4.0, 1.0, 0.0, -1.0, -4.0]), groups([5])
    right_top = torch.tensor([4.0, 1.0, 0.0, -4.0, -1.0])
    wrong_top = torch.tensor([1.0, 4.0, 0.0, -1.0, -4.0])
    pearson = [pearson_loss(p, label, group, 1) for p in (right_top, wrong_top)]
    topped = [pearson_loss(p, label, group, 1, top1_weight=1.0) for p in (right_top, wrong_top)]
    assert torch.isclose(pearson[0], pearson[1], atol=1e-6)
    assert topped[0] < topped[1] and (topped[0] > pearson[0])


def test_top1_term_has_finite_gradients_on_constant_groups():
    pred = torch.randn(6, requires_grad=True)
    label = torch.tensor([1.0, 1.0, 1.0, 0.3, 0.1, 0.9])
    loss = pearson_loss(pred, label, groups([3, 3]), 2, top1_weight=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all() and pred.grad[:3].abs().sum() == 0
