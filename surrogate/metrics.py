"""How well a surrogate ranks candidates: per-step Pearson and Spearman, and top-k recall of the exact argmax."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from surrogate.groups import Group

TOP_K = (1, 4, 8, 16)


def ranking_metrics(groups: list[Group], predictions: list[torch.Tensor], top_k=TOP_K) -> dict[str, float]:
    """Means over steps whose labels vary: Pearson, Spearman, and recall@k of the exact best candidate."""
    pearson, spearman, hits = [], [], {k: [] for k in top_k}
    for group, pred in zip(groups, predictions):
        labels, pred = group.labels.numpy(), pred.double().numpy()
        if len(labels) < 2 or np.std(labels) < 1e-6:
            continue
        if np.std(pred) > 0:
            pearson.append(pearsonr(pred, labels)[0])
            spearman.append(spearmanr(pred, labels)[0])
        else:
            pearson.append(0.0)
            spearman.append(0.0)
        best = int(np.argmax(labels))  # ties: the lowest index, as greedy breaks them
        order = np.argsort(-pred, kind="stable")
        for k in top_k:
            hits[k].append(best in order[:k])
    report = {
        "steps": len(pearson),
        "pearson": float(np.mean(pearson)) if pearson else math.nan,
        "spearman": float(np.mean(spearman)) if spearman else math.nan,
    }
    report.update({f"recall@{k}": float(np.mean(v)) if v else math.nan for k, v in hits.items()})
    return report
