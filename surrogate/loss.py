"""Pearson correlation within groups, and the surrogate's loss 1 − Pearson (docs/DESIGN.md §5).

A group is one (record, step): the candidates of one greedy step. Pearson ignores scale and shift,
so only the ranking within a step is learned. Groups whose labels are (near) constant carry no
ranking and are masked out instead of producing NaN.
"""

from __future__ import annotations

import torch


def group_pearson(
    pred: torch.Tensor, label: torch.Tensor, group: torch.Tensor, n_groups: int, min_std: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Pearson r per group, mask of groups whose labels vary by more than `min_std`)."""
    pred, label = pred.double(), label.double()
    count = torch.zeros(n_groups, dtype=torch.float64, device=pred.device).index_add_(0, group, torch.ones_like(pred))

    def centred(x: torch.Tensor) -> torch.Tensor:
        mean = torch.zeros_like(count).index_add_(0, group, x) / count.clamp(min=1)
        return x - mean[group]

    dp, dl = centred(pred), centred(label)

    def per_group(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(count).index_add_(0, group, x)

    cov, var_p, var_l = per_group(dp * dl), per_group(dp * dp), per_group(dl * dl)
    valid = (count >= 2) & (var_l / count.clamp(min=1)).sqrt().gt(min_std)
    r = cov / (var_p.sqrt() * var_l.sqrt()).clamp(min=1e-12)
    return torch.where(valid, r, torch.zeros_like(r)), valid


def pearson_loss(pred: torch.Tensor, label: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """1 − mean Pearson over the groups with varying labels (0 with a gradient path if there are none)."""
    r, valid = group_pearson(pred, label, group, n_groups)
    if not valid.any():
        return pred.sum() * 0.0
    return (1.0 - r[valid].mean()).to(pred.dtype)
