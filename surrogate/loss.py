"""Pearson correlation within groups, and the surrogate's loss 1 − Pearson (docs/DESIGN.md §5).

A group is one (record, step): the candidates of one greedy step. Pearson ignores scale and shift,
so only the ranking within a step is learned. Groups whose labels are (near) constant carry no
ranking and are masked out instead of producing NaN.

Pearson weighs every candidate alike, while the hybrid needs only the best few ranked right. An
optional top-heavy term (ListNet's top-one loss, Cao et al. 2007) adds the KL divergence, per step,
from the softmax of the standardised labels to that of the standardised predictions; a low
temperature puts its weight on the candidates near the top. Standardising keeps it scale-free.
"""

from __future__ import annotations

import torch


def group_sum(x: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """The sum of x over each group."""
    return torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, group, x)


def group_centred(x: torch.Tensor, group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x minus its group's mean, each group's size)."""
    count = group_sum(torch.ones_like(x), group, n_groups)
    return x - (group_sum(x, group, n_groups) / count.clamp(min=1))[group], count


def group_pearson(
    pred: torch.Tensor, label: torch.Tensor, group: torch.Tensor, n_groups: int, min_std: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Pearson r per group, mask of groups whose labels vary by more than `min_std`)."""
    (dp, count), (dl, _) = group_centred(pred.double(), group, n_groups), group_centred(label.double(), group, n_groups)
    cov, var_p, var_l = (group_sum(x, group, n_groups) for x in (dp * dl, dp * dp, dl * dl))
    valid = (count >= 2) & (var_l / count.clamp(min=1)).sqrt().gt(min_std)
    r = cov / (var_p.sqrt() * var_l.sqrt()).clamp(min=1e-12)
    return torch.where(valid, r, torch.zeros_like(r)), valid


def group_standardise(x: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """x minus its group's mean, over its group's standard deviation (floored, so constant groups stay finite)."""
    centred, count = group_centred(x, group, n_groups)
    std = (group_sum(centred * centred, group, n_groups) / count.clamp(min=1)).sqrt()
    return centred / std.clamp(min=1e-6)[group]


def group_log_softmax(logits: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """log softmax of `logits` within each group."""
    top = torch.full((n_groups,), -torch.inf, dtype=logits.dtype, device=logits.device)
    top = top.scatter_reduce(0, group, logits.detach(), reduce="amax")
    shifted = logits - top[group]
    total = group_sum(shifted.exp(), group, n_groups)
    return shifted - total.log()[group]


def top1_divergence(
    pred: torch.Tensor, label: torch.Tensor, group: torch.Tensor, n_groups: int, temperature: float
) -> torch.Tensor:
    """Per group: KL(softmax(z(label)/T) ‖ softmax(z(pred)/T)), z standardising within the group."""
    pred, label = pred.double(), label.double()
    target = group_log_softmax(group_standardise(label, group, n_groups) / temperature, group, n_groups)
    model = group_log_softmax(group_standardise(pred, group, n_groups) / temperature, group, n_groups)
    return group_sum(target.exp() * (target - model), group, n_groups)


def pearson_loss(
    pred: torch.Tensor,
    label: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    top1_weight: float = 0.0,
    top1_temperature: float = 0.5,
) -> torch.Tensor:
    """1 − mean Pearson over the groups with varying labels, plus `top1_weight` times their mean top-one
    divergence (0 with a gradient path if no group varies)."""
    r, valid = group_pearson(pred, label, group, n_groups)
    if not valid.any():
        return pred.sum() * 0.0
    loss = 1.0 - r[valid].mean()
    if top1_weight:
        loss = loss + top1_weight * top1_divergence(pred, label, group, n_groups, top1_temperature)[valid].mean()
    return loss.to(pred.dtype)
