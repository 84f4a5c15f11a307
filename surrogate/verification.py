"""Which candidates the hybrid verifies exactly, and the calibration that makes adaptive verification safe.

Fixed k verifies the surrogate's top k. Adaptive verification goes down the surrogate's ranking in
rounds and stops once the best verified exact score beats every unverified candidate's calibrated
prediction plus a margin:

    stop when  max_v s(v)  ≥  a·ŝ(u_next) + mean_v [s(v) − a·ŝ(v)] + margin

where ŝ is the surrogate's prediction, a its scale in nats, v the verified candidates and u_next the
best unverified one. The mean residual of the verified candidates fixes the step's offset (Pearson
training leaves it free). The margin for a miss rate ε is read off a table simulated on held-out
labelled steps (`calibrate`): the smallest margin whose simulated chance of missing the exact argmax
is at most ε. ε = 0 never stops early, so with `k_max` ≥ all candidates the hybrid is exact greedy.

A hybrid with memory ranks by prediction plus each candidate's remembered residual (exact − predicted,
from the last step that verified it) and verifies the top k (`remembered_top_k`). A deletion changes
most the context of the tokens next to it, so their memories go stale first: with `refresh` r the
kept tokens within r places of the last step's deletions are verified as well (`near_deletions`).
The same holds for the remembered lookahead correction f_h − f: it is rerun only near the last
deletion, and for candidates never computed (`lookahead_to_rerun`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence

import numpy as np
import torch

MARGINS = (0.0, *np.geomspace(0.01, 100.0, 61).tolist())


def top_k(predicted: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest predictions, in index order (ties: the lowest index)."""
    return torch.sort(torch.sort(-predicted, stable=True).indices[:k]).values


def remembered(memory: dict[int, float], keys: list[int]) -> torch.Tensor | None:
    """The remembered residual of each key, or None when none is remembered (a chain's first step). A key never
    verified gets the mean of the others' residuals: the surrogate's offset in nats, as far as it is known."""
    known = [memory[key] for key in keys if key in memory]
    if not known:
        return None
    offset = sum(known) / len(known)
    return torch.tensor([memory.get(key, offset) for key in keys], dtype=torch.float64)


def near_deletions(deleted_at: Sequence[int], refresh: int, kept: int) -> torch.Tensor:
    """The kept positions within `refresh` places of the deletions, each given as its insertion point among
    the `kept` tokens now (refresh 1: the kept token on each side)."""
    near = {i for gap in deleted_at for i in range(gap - refresh, gap + refresh) if 0 <= i < kept}
    return torch.tensor(sorted(near), dtype=torch.long)


def lookahead_to_rerun(
    positions: Sequence[int], known: Container[int], deleted_at: Sequence[int], window: int, kept: int
) -> list[int]:
    """Indices into `positions` (candidates' places among the `kept` tokens) whose lookahead correction a hybrid
    with `lookahead_refresh` `window` reruns: those it has none remembered for (`known` holds the places it
    has), and those within `window` places of the last deletion."""
    near = set(near_deletions(deleted_at, window, kept).tolist())
    return [i for i, place in enumerate(positions) if place not in known or place in near]


def remembered_top_k(
    predicted: torch.Tensor,
    residuals: torch.Tensor | None,
    k: int,
    first_k: int | None = None,
    stale: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a hybrid with memory verifies (in index order): at a chain's first step (`residuals` None) its top
    `first_k` by prediction, or every candidate when `first_k` is None; after it, the top k of prediction
    plus remembered residual, and the candidates `stale` names (those next to the last deletion)."""
    if residuals is None:
        return torch.arange(len(predicted)) if first_k is None else top_k(predicted, first_k)
    chosen = top_k(predicted + residuals, k)
    return chosen if stale is None or not len(stale) else torch.unique(torch.cat([chosen, stale]))


def verify_adaptively(
    predicted: torch.Tensor,
    verify: Callable[[torch.Tensor], torch.Tensor],
    margin: float,
    scale: float = 1.0,
    round_size: int = 2,
    k_max: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices verified, their exact scores): `verify(indices)` in rounds down the ranking until the rule stops it."""
    order = torch.sort(-predicted.double(), stable=True).indices
    calibrated = scale * predicted.double()
    limit = len(order) if k_max is None else min(k_max, len(order))
    chosen, values = order[:0], torch.zeros(0, dtype=torch.float64)
    step = round_size if math.isfinite(margin) else limit  # no margin, no early stop: one round
    while len(chosen) < limit:
        batch = order[len(chosen) : min(len(chosen) + step, limit)]
        chosen, values = torch.cat([chosen, batch]), torch.cat([values, verify(batch).double().cpu()])
        if len(chosen) < limit and math.isfinite(margin):
            offset = (values - calibrated[chosen]).mean()
            if values.max() >= calibrated[order[len(chosen)]] + offset + margin:
                break
    return chosen, values


def choose_and_verify(
    predicted: torch.Tensor,
    verify: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    margin: float | None = None,
    calibration: dict | None = None,
    k_max: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices verified, their exact scores): the top `k` when `margin` is None, else adaptive verification
    with the calibration's scale and round size."""
    if margin is None:
        chosen = top_k(predicted, k)
        return chosen, verify(chosen)
    calibration = calibration or {}
    scale, round_size = calibration.get("scale", 1.0), calibration.get("round_size", 2)
    return verify_adaptively(predicted, verify, margin, scale, round_size, k_max)


def fit_scale(steps: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Least-squares a with label − mean ≈ a · (prediction − mean) within each step: the predictions' unit in nats."""
    num = den = 0.0
    for predicted, labels in steps:
        p, y = predicted.double() - predicted.double().mean(), labels.double() - labels.double().mean()
        num, den = num + float((p * y).sum()), den + float((p * p).sum())
    return num / den if den > 0 else 1.0


def calibrate(
    steps: Sequence[tuple[torch.Tensor, torch.Tensor]], round_size: int = 2, margins: Sequence[float] = MARGINS
) -> dict:
    """Simulate adaptive verification on labelled steps (prediction, exact scores) for each margin.

    Returns {scale, round_size, steps, table: [[margin, miss rate, mean candidates verified], ...]}.
    A step is missed when no verified candidate reaches the step's best exact score.
    """
    steps = [(p, y) for p, y in steps if len(y) > 1]
    scale = fit_scale(steps)
    table = []
    for margin in margins:
        missed = verified = 0
        for predicted, labels in steps:
            chosen, values = verify_adaptively(predicted, lambda i: labels[i], margin, scale, round_size)
            missed += bool(values.max() < labels.max() - 1e-9)
            verified += len(chosen)
        table.append([float(margin), missed / max(len(steps), 1), verified / max(len(steps), 1)])
    return {"scale": scale, "round_size": round_size, "steps": len(steps), "table": table}


def margin_for(calibration: dict | None, epsilon: float) -> float:
    """The smallest calibrated margin whose simulated miss rate is at most `epsilon`; inf for ε = 0 or none."""
    if epsilon <= 0:
        return math.inf
    if not calibration:
        raise ValueError("adaptive verification (scorer.epsilon > 0) needs a calibrated surrogate; retrain it")
    safe = [margin for margin, miss, _ in calibration["table"] if miss <= epsilon]
    return min(safe) if safe else math.inf
