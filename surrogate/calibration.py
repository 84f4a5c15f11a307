"""The margins that make adaptive verification safe, simulated on held-out labelled steps.

`calibrate` replays adaptive verification without memory on each step alone; `calibrate_memory`
replays a hybrid with memory along each record's exact path (`metrics.carried_residual`), under the
memory policy it will run with (first step, refresh and lookahead window). Either gives a table of
margin → (simulated chance of missing the exact argmax, mean candidates verified a step), and
`margin_for` reads off the smallest margin whose miss rate is at most ε. With memory the margin is
in units of `age_spread`: how far off prediction plus remembered residual is, by the memory's age.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from surrogate.groups import Group
from surrogate.metrics import Replay, argmax_verified, carried_residual
from surrogate.verification import AGES, age_bucket, verify_adaptively

MARGINS = (0.0, *np.geomspace(0.01, 100.0, 61).tolist())
MEMORY_POLICY = ("first_k", "refresh", "lookahead_refresh")  # what a memory calibration was simulated under


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


def age_spread(groups: list[Group], replay: Replay) -> list[float]:
    """The standard deviation of label − (prediction plus remembered residual) in each memory-age bucket
    (`verification.age_bucket`), over the candidates of every step but a record's first; a bucket with no
    candidates gets the deviation of all."""
    errors: dict[int, list[np.ndarray]] = defaultdict(list)
    for group, estimate, ages in zip(groups, replay.estimates, replay.ages):
        if all(age is None for age in ages):  # a record's first step: nothing remembered yet
            continue
        buckets = np.array([age_bucket(age) for age in ages])
        error = (group.labels.double() - estimate).numpy()
        for bucket in np.unique(buckets):
            errors[int(bucket)].append(error[buckets == bucket])
    pooled = np.concatenate([e for parts in errors.values() for e in parts]) if errors else np.ones(1)
    fallback = max(float(np.std(pooled)), 1e-6)
    return [
        max(float(np.std(np.concatenate(errors[b]))), 1e-6) if b in errors else fallback for b in range(len(AGES) + 2)
    ]


def calibrate_memory(
    groups: list[Group],
    predictions: list[torch.Tensor],
    policy: dict,
    round_size: int = 2,
    spread_k: int = 8,
    margins: Sequence[float] = MARGINS,
) -> dict:
    """Replay a hybrid with memory (`policy`: first_k, refresh, lookahead_refresh) along the labelled exact paths
    of `groups` for each margin; `predictions` are the surrogate's on the groups as that hybrid sees them
    (`metrics.remembered_lookahead`'s when it remembers its lookahead prior). The spread by memory age,
    the margins' unit, comes from the same replay at a fixed `spread_k` candidates a step.

    Returns {policy, round_size, steps, spread, table: [[margin, miss rate, mean candidates verified], ...]},
    the first steps of records (which verify first_k, or all) counted with the others."""
    replay = (policy["first_k"], policy["refresh"])
    spread = age_spread(groups, carried_residual(groups, predictions, spread_k, *replay))
    table = []
    for margin in margins:
        verified = carried_residual(groups, predictions, None, *replay, margin, round_size, spread=spread).verified
        mean = sum(len(chosen) for chosen in verified) / max(len(verified), 1)
        table.append([float(margin), 1.0 - argmax_verified(groups, verified), mean])
    policy = {key: policy[key] for key in MEMORY_POLICY}
    return {"policy": policy, "round_size": round_size, "steps": len(groups), "spread": spread, "table": table}


def margin_for(calibration: dict | None, epsilon: float, memory: dict | None = None) -> float:
    """The smallest calibrated margin whose simulated miss rate is at most `epsilon`; inf for ε = 0. With `memory`
    (the hybrid's first_k, refresh and lookahead_refresh) the margin comes from the memory calibration, which
    must have been simulated under that policy."""
    if epsilon <= 0:
        return math.inf
    if not calibration:
        raise ValueError("adaptive verification (scorer.epsilon > 0) needs a calibrated surrogate; retrain it")
    if memory is not None:
        simulated = (calibration.get("memory") or {}).get("policy")
        if simulated != {key: memory[key] for key in MEMORY_POLICY}:
            raise ValueError(
                f"scorer.epsilon with scorer.memory needs margins calibrated under the same memory policy "
                f"{memory}; this surrogate's were calibrated under {simulated}. Retrain it with "
                f"surrogate.calibrate_memory set to that policy"
            )
        calibration = calibration["memory"]
        if "spread" not in calibration:
            raise ValueError(
                "this surrogate's memory calibration predates margins by memory age (no spread); retrain it"
            )
    row = operating_point(calibration["table"], epsilon)
    return math.inf if row is None else row[0]


def operating_point(table: list[list[float]], epsilon: float) -> list[float] | None:
    """The row [margin, miss rate, verified a step] of a calibration table with the smallest margin whose miss
    rate is at most `epsilon`; None when no margin is that safe."""
    safe = [row for row in table if row[1] <= epsilon]
    return min(safe) if safe else None
