"""The hybrid's policy replayed along labelled exact paths, with the labels as its exact scores.

`replay` runs `policy.verify_step` at each labelled step, with a `ChainMemory` per record, exactly as
the live scorer does along the same path: calibration (surrogate/calibration.py), evaluation and the
bench's step agreement read what it verified. `remembered_lookahead` gives the steps' priors as a
hybrid that reruns its lookahead prior only near the last deletion sees them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from surrogate.groups import Group
from surrogate.policy import ChainMemory, HybridPolicy, Margins, estimates, lookahead_to_rerun, verify_step


class Replay(NamedTuple):
    """What `replay` gives, step by step; indices are into each step's candidates (`Group.candidates`)."""

    verified: list[np.ndarray]  # the candidates verified
    estimates: list[np.ndarray]  # each candidate's estimate before the step: prediction plus memory, or offset
    ages: list[list[int | None]]  # each candidate's memory age before the step (None: never verified)


def chain_starts(groups: list[Group]) -> list[bool]:
    """Whether each group starts a record's run of consecutive steps (groups come in step order)."""
    return [
        i == 0 or groups[i - 1].record_id != group.record_id or groups[i - 1].step != group.step - 1
        for i, group in enumerate(groups)
    ]


def replay(
    groups: list[Group], predictions: list[torch.Tensor], policy: HybridPolicy, margins: Margins | None
) -> Replay:
    """Run `verify_step` along the exact paths of `groups` (one record after another, in step order) with the
    surrogate's `predictions` of every kept token; the labels are the exact scores it verifies."""
    out, memory = Replay([], [], []), ChainMemory()
    for group, predicted, start in zip(groups, predictions, chain_starts(groups)):
        memory = ChainMemory() if start else memory
        kept, candidates = group.kept.tolist(), group.candidate_indices().tolist()
        predicted = predicted.detach().double().cpu().numpy()[candidates]
        labels = group.labels.double().numpy()[candidates]
        view = memory.view(kept, candidates, policy.refresh)
        out.estimates.append(estimates(predicted, view.residual))
        out.ages.append(view.ages)
        chosen, values = verify_step(policy, margins, predicted, view, labels.__getitem__)
        memory.learn([kept[candidates[j]] for j in chosen], values - predicted[chosen], kept)
        out.verified.append(chosen)
    return out


def step_agreement(groups: list[Group], verified: list[np.ndarray]) -> float:
    """Fraction of steps whose exact best score is among the candidates verified there."""
    hits = []
    for group, chosen in zip(groups, verified):
        labels = group.labels.double().numpy()[group.candidate_indices().numpy()]
        hits.append(bool(len(chosen)) and bool(labels[chosen].max() >= labels.max() - 1e-9))
    return sum(hits) / max(len(hits), 1)


def remembered_lookahead(
    groups: list[Group], first_order: list[Group], window: int | None, prior_column: int | None
) -> tuple[list[Group], list[int]]:
    """The steps of `groups` (priors f_h) as a hybrid with `policy.lookahead_window` `window` sees them, and how many
    candidates each step reruns the lookahead for.

    Its prior is this step's f (the priors of `first_order`, the same steps at horizon 0) plus the
    correction f_h − f remembered from the last step that computed it (`policy.lookahead_to_rerun`).
    `prior_column` is where the features hold the prior (`features.prior_column`), shifted with it.
    """
    out, reran, memory = [], [], ChainMemory()
    for group, base, start in zip(groups, first_order, chain_starts(groups)):
        if (base.record_id, base.step) != (group.record_id, group.step) or not torch.equal(base.kept, group.kept):
            raise ValueError(f"record {group.record_id!r} step {group.step}: the horizon-0 steps do not match")
        memory = ChainMemory() if start else memory
        kept, candidates = group.kept.tolist(), group.candidate_indices().tolist()
        fresh = lookahead_to_rerun(memory, kept, candidates, window)
        correction = (group.prior - base.prior).tolist()
        memory.lookahead.update({kept[candidates[i]]: correction[candidates[i]] for i in fresh})
        memory.kept = kept
        prior = base.prior + torch.tensor([memory.lookahead.get(key, 0.0) for key in kept], dtype=torch.float64)
        features = group.features.clone()
        if prior_column is not None:
            features[:, prior_column] += (prior - group.prior).float()
        out.append(Group(group.record_id, group.step, features, prior, group.labels, group.kept, group.candidates))
        reran.append(len(fresh))
    return out, reran
