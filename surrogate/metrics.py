"""How well a surrogate ranks candidates: per-step Pearson and Spearman, pooled Pearson, top-k recall of the argmax.

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
