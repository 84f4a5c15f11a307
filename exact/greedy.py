"""Greedy pruning (paper Alg. 1): repeatedly delete the reasoning token whose removal keeps J highest."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from exact.scorers import Scorer
from exact.sequence import Segments


@dataclass
class GreedyTrace:
    """What a greedy run produced: the deletion order, J after each deletion, and the cost."""

    deletion_order: list[int] = field(default_factory=list)
    step_objective: list[float | None] = field(default_factory=list)  # J of the full chain, then after each deletion
    step_scores: list[list[list[float]]] | None = None  # per step: [[reasoning index, J after deleting it], ...]
    tokens_processed: int = 0
    forward_passes: int = 0
    wall_s: float = 0.0


def distinct_candidates(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates to score, and for every kept token the candidate that gives the same chain.

    Deleting any token of a run of identical adjacent tokens leaves the same sequence, so only the
    first of each run is scored. Its exact score is shared, and ties resolve to the lowest index.
    """
    first = torch.ones_like(tokens, dtype=torch.bool)
    first[1:] = tokens[1:] != tokens[:-1]
    return torch.nonzero(first)[:, 0], torch.cumsum(first, 0) - 1


def greedy_prune(
    scorer: Scorer,
    segments: Segments,
    deletions: int,
    record_scores: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    per_step: int = 1,
) -> GreedyTrace:
    """Delete `deletions` reasoning tokens greedily; ties go to the lowest index.

    With `per_step` m > 1, each scoring round deletes its m best candidates at once (faster, no
    longer exact greedy); J is then known only after the first and the last deletion of a round,
    and the others are recorded as None. Candidates a scorer did not score come back as -inf.
    `on_step(done, deletions)` is called after every deletion (for progress bars).
    """
    n = len(segments.reasoning)
    if not 0 <= deletions <= n:
        raise ValueError(f"cannot make {deletions} deletions from {n} reasoning tokens")
    if per_step < 1:
        raise ValueError(f"per_step must be at least 1, got {per_step}")
    began = time.perf_counter()
    kept = torch.arange(n)
    prompt_len = len(segments.prompt)
    trace = GreedyTrace(step_scores=[] if record_scores else None)

    def objective_now() -> float:
        """J of the current chain by its own pass, when no base pass gave it."""
        scores = scorer.objective(segments.with_kept(kept), prompt_len, len(kept))
        trace.tokens_processed += scores.tokens
        trace.forward_passes += scores.passes
        return float(scores.values[0])

    trace.step_objective.append(objective_now())

    while len(trace.deletion_order) < deletions:
        candidates, same_as = distinct_candidates(segments.reasoning[kept])
        scores = scorer.score(segments.with_kept(kept), prompt_len, len(kept), candidates)
        trace.tokens_processed += scores.tokens
        trace.forward_passes += scores.passes
        if trace.step_objective[-1] is None:
            trace.step_objective[-1] = scores.current if scores.current is not None else objective_now()
        if record_scores:
            values = scores.values[same_as]
            trace.step_scores.append([[int(i), float(v)] for i, v in zip(kept, values) if math.isfinite(v)])
        ranked = torch.sort(-scores.values, stable=True).indices  # best first; ties: the lowest index
        take = min(per_step, deletions - len(trace.deletion_order), int(torch.isfinite(scores.values).sum()))
        chosen = candidates[ranked[:take]]
        trace.deletion_order += kept[chosen].tolist()
        trace.step_objective += [float(scores.values[ranked[0]])] + [None] * (take - 1)
        kept = kept[~torch.isin(torch.arange(len(kept)), chosen)]
        if on_step is not None:
            on_step(len(trace.deletion_order), deletions)
    if trace.step_objective[-1] is None:
        trace.step_objective[-1] = objective_now()
    trace.wall_s = time.perf_counter() - began
    return trace
