"""The margins that make the hybrid's stop rule safe, computed when a hybrid is built from evidence stored with
its surrogate.

A surrogate carries its calibration evidence (`evidence`): every held-out validation step of its
training run, with the candidates' predictions as a hybrid with `policy.lookahead_window` sees them,
and their exact scores. `margins_for` replays a policy along those paths (surrogate/replay.py):
- the margin's unit is the spread of an estimate's error by the age of its memory, measured by a
  replay at a fixed k of `SPREAD_K` (`age_spread`);
- z is the smallest margin of `MARGINS` whose replay misses the exact best candidate at a rate of at
  most ε.

So changing ε, k_min, k_max, the round size or `refresh` needs no retraining; only the lookahead window,
which changes the predictions themselves, needs `+experiment=calibrate_surrogate` (minutes, from the
stored labels and cached features).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from surrogate.groups import Group
from surrogate.policy import AGES, HybridPolicy, Margins, age_bucket
from surrogate.replay import Replay, replay, step_agreement

MARGINS = (0.0, *np.geomspace(0.01, 100.0, 241).tolist())  # z, in spreads
SPREAD_K = 8  # candidates a step of the fixed-k replay that measures the spread by memory age
VERSION = 2  # the evidence layout


def evidence(groups: list[Group], predictions: list[torch.Tensor], lookahead_window: int | None) -> dict:
    """The calibration a surrogate stores: its `predictions` on held-out labelled steps `groups` (as a hybrid
    with `lookahead_window` sees them), with their labels, kept tokens and candidates, in flat tensors."""
    records = {record: i for i, record in enumerate(dict.fromkeys(g.record_id for g in groups))}
    mask = [torch.zeros(len(g.kept), dtype=torch.bool).index_fill_(0, g.candidate_indices(), True) for g in groups]
    return {
        "version": VERSION,
        "lookahead_window": lookahead_window,
        "record": torch.tensor([records[g.record_id] for g in groups], dtype=torch.int32),
        "step": torch.tensor([g.step for g in groups], dtype=torch.int32),
        "size": torch.tensor([len(g.kept) for g in groups], dtype=torch.int32),
        "kept": torch.cat([g.kept for g in groups]).int(),
        "candidate": torch.cat(mask),
        "predicted": torch.cat([p.detach().double().cpu() for p in predictions]),
        "labels": torch.cat([g.labels.double() for g in groups]),
    }


def evidence_steps(calibration: dict) -> tuple[list[Group], list[torch.Tensor]]:
    """The held-out steps and predictions stored by `evidence` (groups without features)."""
    sizes = calibration["size"].tolist()
    split = {key: calibration[key].split(sizes) for key in ("kept", "candidate", "predicted", "labels")}
    groups = [
        Group(str(record), step, torch.zeros(size, 0), predicted, labels, kept.long(), torch.nonzero(mask)[:, 0])
        for record, step, size, kept, mask, predicted, labels in zip(
            calibration["record"].tolist(),
            calibration["step"].tolist(),
            sizes,
            split["kept"],
            split["candidate"],
            split["predicted"],
            split["labels"],
        )
    ]
    return groups, list(split["predicted"])


def check_evidence(calibration: dict | None, policy: HybridPolicy, horizon: int) -> None:
    """Raise ValueError when `calibration` cannot calibrate `policy`: an older layout, or predictions made under
    another lookahead window."""
    if calibration is None:
        return
    if calibration.get("version") != VERSION:
        raise ValueError(
            "this surrogate's calibration predates margins computed at load; recalibrate it with "
            "+experiment=calibrate_surrogate surrogate.path=FILE"
        )
    window = calibration["lookahead_window"]
    if horizon and window != policy.lookahead_window:
        raise ValueError(
            f"policy.lookahead_window is {policy.lookahead_window}, but this surrogate was calibrated with its "
            f"lookahead prior rerun within {window}; set that, or recalibrate with +experiment=calibrate_surrogate "
            f"surrogate.path=FILE surrogate.lookahead_window={policy.lookahead_window}"
        )


def age_spread(groups: list[Group], replayed: Replay) -> tuple[float, ...]:
    """The standard deviation of label − estimate in each memory-age bucket (`policy.age_bucket`), over the
    candidates of every step but a record's first; a bucket with no candidates gets the deviation of all."""
    errors: dict[int, list[np.ndarray]] = defaultdict(list)
    for group, estimate, ages in zip(groups, replayed.estimates, replayed.ages):
        if all(age is None for age in ages):  # a record's first step: nothing remembered yet
            continue
        buckets = np.array([age_bucket(age) for age in ages])
        error = group.labels.double().numpy()[group.candidate_indices().numpy()] - estimate
        for bucket in np.unique(buckets):
            errors[int(bucket)].append(error[buckets == bucket])
    pooled = np.concatenate([e for parts in errors.values() for e in parts]) if errors else np.ones(1)
    fallback = max(float(np.std(pooled)), 1e-6)
    return tuple(
        max(float(np.std(np.concatenate(errors[b]))), 1e-6) if b in errors else fallback for b in range(len(AGES) + 2)
    )


def simulate(calibration: dict, policy: HybridPolicy, margins: Margins | None) -> tuple[float, float]:
    """(miss rate, mean candidates verified a step) of `policy` with `margins`, replayed on the evidence."""
    groups, predictions = evidence_steps(calibration)
    verified = replay(groups, predictions, policy, margins).verified
    return 1.0 - step_agreement(groups, verified), sum(len(v) for v in verified) / max(len(verified), 1)


def in_force(calibration: dict | None, policy: HybridPolicy, horizon: int) -> tuple[HybridPolicy, Margins | None]:
    """The policy a surrogate with `calibration` (and lookahead `horizon`) runs, and its stop rule: `policy` with
    `margins_for`'s margins after `check_evidence`, or, with no calibration to hold ε, a fixed k_min."""
    check_evidence(calibration, policy, horizon)
    margins = margins_for(calibration, policy)
    return (policy if margins is not None or policy.fixed else policy.as_fixed()), margins


def margins_for(calibration: dict | None, policy: HybridPolicy) -> Margins | None:
    """The stop rule that holds `policy`'s miss rate to ε on the evidence: z = inf (verify everything) for ε = 0,
    whatever the calibration, or when no margin of `MARGINS` is that safe; None for a fixed k or no calibration."""
    if policy.epsilon == 0:
        return Margins(math.inf, ())
    if policy.fixed or calibration is None:
        return None
    groups, predictions = evidence_steps(calibration)
    fixed = HybridPolicy(None, SPREAD_K, refresh=policy.refresh, lookahead_window=policy.lookahead_window)
    spread = age_spread(groups, replay(groups, predictions, fixed, None))

    def missed(z: float) -> bool:
        verified = replay(groups, predictions, policy, Margins(z, spread)).verified
        return 1.0 - step_agreement(groups, verified) > policy.epsilon

    low, high = 0, len(MARGINS)  # the miss rate falls as z grows: bisect for the first safe margin
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if missed(MARGINS[middle]) else (low, middle)
    return Margins(MARGINS[low] if low < len(MARGINS) else math.inf, spread)


def dial(calibration: dict, policy: HybridPolicy, epsilons: Sequence[float]) -> dict[str, dict]:
    """For each ε, `policy` at that ε on the evidence: its margin z, simulated miss rate and candidates verified."""
    out = {}
    for epsilon in epsilons:
        at = HybridPolicy(**{**policy.to_dict(), "epsilon": epsilon})
        margins = margins_for(calibration, at)
        miss, verified = simulate(calibration, at, margins)
        out[f"{epsilon:g}"] = {"z": margins.z, "miss": round(miss, 4), "verified": round(verified, 2)}
    return out
