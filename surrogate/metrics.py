"""How well a surrogate ranks candidates: per-step Pearson and Spearman, pooled Pearson, top-k recall of the argmax;
`carried_residual`: what remembering exact scores across steps could add (an oracle, and a replay of the hybrid);
and `remembered_lookahead`: the steps as a hybrid that remembers its lookahead prior sees them.

The headline is the per-step Pearson: the mean over steps of the correlation within one step, which
is what the loss trains and what a pruner needs. `pooled_pearson` pools every step of a record
before correlating (then averages over records); it also credits tracking how J falls from step to
step, so it reads higher for models that carry f(q).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from surrogate.groups import Group
from surrogate.verification import (
    age_margins,
    lookahead_to_rerun,
    memory_ages,
    near_deletions,
    remembered,
    verify_remembered,
)


def _first_steps(groups: list[Group]) -> list[bool]:
    """Whether each group starts a record's run of consecutive steps (groups come in step order)."""
    return [
        i == 0 or groups[i - 1].record_id != group.record_id or groups[i - 1].step != group.step - 1
        for i, group in enumerate(groups)
    ]


def _deleted_at(before: Group, group: Group) -> list[int]:
    """Where the step before deleted: insertion points among the kept tokens of `group`."""
    kept = group.kept.tolist()
    return np.searchsorted(kept, sorted(set(before.kept.tolist()) - set(kept))).tolist()


TOP_K = (1, 2, 4, 8, 16)


def _correlations(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    if np.std(pred) == 0:
        return 0.0, 0.0
    return float(pearsonr(pred, labels)[0]), float(spearmanr(pred, labels)[0])


def ranking_metrics(groups: list[Group], predictions: list[torch.Tensor], top_k=TOP_K) -> dict[str, float]:
    """Means over steps whose labels vary: Pearson, Spearman, recall@k of the exact best; and pooled Pearson."""
    pearson, spearman, hits = [], [], {k: [] for k in top_k}
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for group, pred in zip(groups, predictions):
        labels, pred = group.labels.numpy(), pred.double().numpy()
        if len(labels) < 2 or np.std(labels) < 1e-6:
            continue
        r, rho = _correlations(pred, labels)
        pearson.append(r)
        spearman.append(rho)
        pooled[group.record_id].append((pred, labels))
        best = int(np.argmax(labels))  # ties: the lowest index, as greedy breaks them
        order = np.argsort(-pred, kind="stable")
        for k in top_k:
            hits[k].append(best in order[:k])
    per_record = [
        _correlations(np.concatenate([p for p, _ in steps]), np.concatenate([y for _, y in steps]))[0]
        for steps in pooled.values()
    ]
    report = {
        "steps": len(pearson),
        "pearson": float(np.mean(pearson)) if pearson else math.nan,
        "spearman": float(np.mean(spearman)) if spearman else math.nan,
        "pooled_pearson": float(np.mean(per_record)) if per_record else math.nan,
    }
    report.update({f"recall@{k}": float(np.mean(v)) if v else math.nan for k, v in hits.items()})
    return report


class Replay(NamedTuple):
    """What `carried_residual` gives, step by step along the exact paths."""

    estimates: list[torch.Tensor]  # prediction plus remembered residual (the prediction at a record's first step)
    verified: list[torch.Tensor]  # the candidates verified, whose residuals are remembered from then on
    ages: list[list[int | None]]  # each candidate's memory age, before the step (`verification.memory_ages`)


def carried_residual(
    groups: list[Group],
    predictions: list[torch.Tensor],
    verified: int | None = None,
    first_k: int | None = None,
    refresh: int = 0,
    margin: float | None = None,
    round_size: int = 2,
    k_max: int | None = None,
    spread: list[float] | None = None,
) -> Replay:
    """Each step's predictions plus the exact residuals (label − prediction) remembered from earlier steps,
    the candidates whose residuals that step remembers, and how old each candidate's memory was.

    With `verified` and `margin` None, an oracle: every candidate's residual of the step before, as if the
    hybrid had verified them all. With predictions in nats (f or f_h) it bounds how well a prior that
    remembers exact scores can rank. With `verified` k, or a `margin`, a replay of a hybrid that remembers
    only what it verifies (`verification.verify_remembered`, with the labels as its exact scores: at a
    record's first step the top `first_k`, or every candidate; then the top k of prediction plus memory,
    or adaptively to `margin` in rounds of `round_size` at most `k_max`, the margin times `spread` at
    each candidate's memory age when given (`verification.age_margins`); with `refresh` also the kept
    tokens near the deletion of the step before). Groups come in step order, one record after another,
    along the exact path.
    """
    replay, memory, verified_at = Replay([], [], []), {}, {}
    for i, (group, pred, first) in enumerate(zip(groups, predictions, _first_steps(groups))):
        memory, verified_at = ({}, {}) if first else (memory, verified_at)
        kept, pred, labels = group.kept.tolist(), pred.double(), group.labels.double()
        residuals, ages = remembered(memory, kept), memory_ages(verified_at, kept, len(kept))
        replay.estimates.append(pred if residuals is None else pred + residuals)
        replay.ages.append(ages)
        if verified is None and margin is None:
            step = torch.arange(len(kept))
        else:
            deleted_at = [] if first else _deleted_at(groups[i - 1], group)
            stale = near_deletions(deleted_at, refresh, len(kept)) if refresh else None
            margins = margin if margin is None or spread is None else age_margins(ages, spread, margin)
            policy = (verified or 1, first_k, stale, margins, round_size, k_max)  # with a margin, k is unused
            step, _ = verify_remembered(pred, residuals, labels.__getitem__, *policy)
        residual = (labels - pred).tolist()
        memory.update({kept[j]: residual[j] for j in step.tolist()})
        verified_at.update({kept[j]: len(kept) for j in step.tolist()})
        replay.verified.append(step)
    return replay


def remembered_lookahead(
    groups: list[Group], first_order: list[Group], window: int, prior_column: int | None
) -> tuple[list[Group], list[int]]:
    """The steps of `groups` (priors f_h) as a hybrid with `lookahead_refresh` `window` sees them, and how many
    candidates each step reruns the lookahead for.

    Its prior is this step's f (the priors of `first_order`, the same steps at horizon 0) plus the
    correction f_h − f remembered from the last step that computed it: at a record's first step every
    candidate's, later only those within `window` places of the last deletion. `prior_column` is where
    the features hold f_h − J (`features.prior_column`), shifted with the prior.
    """
    out, reran, memory = [], [], {}
    for i, (group, base, first) in enumerate(zip(groups, first_order, _first_steps(groups))):
        if (base.record_id, base.step) != (group.record_id, group.step) or not torch.equal(base.kept, group.kept):
            raise ValueError(f"record {group.record_id!r} step {group.step}: the horizon-0 steps do not match")
        kept = group.kept.tolist()
        correction = (group.prior - base.prior).tolist()
        memory = {} if first else memory
        deleted_at = [] if first else _deleted_at(groups[i - 1], group)
        known = {j for j, key in enumerate(kept) if key in memory}
        fresh = lookahead_to_rerun(range(len(kept)), known, deleted_at, window, len(kept))
        memory.update({kept[j]: correction[j] for j in fresh})
        prior = base.prior + torch.tensor([memory[key] for key in kept], dtype=torch.float64)
        features = group.features.clone()
        if prior_column is not None:
            features[:, prior_column] += (prior - group.prior).float()
        out.append(Group(group.record_id, group.step, features, prior, group.labels, group.kept))
        reran.append(len(fresh))
    return out, reran


def argmax_verified(groups: list[Group], verified: list[torch.Tensor]) -> float:
    """Fraction of steps whose exact best score is among the candidates verified there (step agreement)."""
    hits = [bool(g.labels[chosen].max() >= g.labels.max() - 1e-9) for g, chosen in zip(groups, verified)]
    return sum(hits) / max(len(hits), 1)
