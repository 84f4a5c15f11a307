"""How well a surrogate ranks candidates: per-step Pearson and Spearman, pooled Pearson, top-k recall of the argmax;
and `carried_residual`: what remembering exact scores across steps could add (an oracle, and a replay of the hybrid).

The headline is the per-step Pearson: the mean over steps of the correlation within one step, which
is what the loss trains and what a pruner needs. `pooled_pearson` pools every step of a record
before correlating (then averages over records); it also credits tracking how J falls from step to
step, so it reads higher for models that carry f(q).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from surrogate.groups import Group
from surrogate.verification import near_deletions, remembered, remembered_top_k

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


def carried_residual(
    groups: list[Group],
    predictions: list[torch.Tensor],
    verified: int | None = None,
    first_k: int | None = None,
    refresh: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each step's predictions plus the exact residuals (label − prediction) remembered from earlier steps,
    and the candidates whose residuals that step remembers.

    With `verified` None, an oracle: every candidate's residual of the step before, as if the hybrid
    had verified them all. With predictions in nats (f or f_h) it bounds how well a prior that
    remembers exact scores can rank. With `verified` k, a replay of a hybrid that remembers only what
    it verifies (`remembered_top_k`: at a record's first step the top `first_k`, or every candidate;
    then the top k of prediction plus memory, and with `refresh` the kept tokens near the deletion of the
    step before). Groups come in step order, one record after another, along the exact path.
    """
    carried, chosen, memory, before = [], [], {}, None
    for group, pred in zip(groups, predictions):
        first = before is None or before.record_id != group.record_id or before.step != group.step - 1
        memory = {} if first else memory
        kept, pred = group.kept.tolist(), pred.double()
        residuals = remembered(memory, kept)
        carried.append(pred if residuals is None else pred + residuals)
        if verified is None:
            step = torch.arange(len(kept))
        else:
            deleted = [] if first else sorted(set(before.kept.tolist()) - set(kept))
            stale = near_deletions(np.searchsorted(kept, deleted).tolist(), refresh, len(kept)) if refresh else None
            step = remembered_top_k(pred, residuals, verified, first_k, stale)
        residual = (group.labels.double() - pred).tolist()
        memory.update({kept[i]: residual[i] for i in step.tolist()})
        chosen.append(step)
        before = group
    return carried, chosen


def argmax_verified(groups: list[Group], verified: list[torch.Tensor]) -> float:
    """Fraction of steps whose exact best score is among the candidates verified there (step agreement)."""
    hits = [bool(g.labels[chosen].max() >= g.labels.max() - 1e-9) for g, chosen in zip(groups, verified)]
    return sum(hits) / max(len(hits), 1)
