"""Greedy pruning (paper Alg. 1): repeatedly delete the reasoning token whose removal keeps J highest."""

from __future__ import annotations

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
    step_objective: list[float] = field(default_factory=list)  # J of the full chain, then after each deletion
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
) -> GreedyTrace:
    """Delete `deletions` reasoning tokens greedily; ties go to the lowest index.

    `on_step(done, deletions)` is called after every deletion (for progress bars).
    """
    n = len(segments.reasoning)
    if not 0 <= deletions <= n:
        raise ValueError(f"cannot make {deletions} deletions from {n} reasoning tokens")
    began = time.perf_counter()
    kept = torch.arange(n)
    prompt_len = len(segments.prompt)
    trace = GreedyTrace(step_scores=[] if record_scores else None)

    initial = scorer.objective(segments.with_kept(kept), prompt_len, n)
    trace.step_objective.append(float(initial.values[0]))
    trace.tokens_processed, trace.forward_passes = initial.tokens, initial.passes

    for step in range(deletions):
        candidates, same_as = distinct_candidates(segments.reasoning[kept])
        scores = scorer.score(segments.with_kept(kept), prompt_len, len(kept), candidates)
        values = scores.values[same_as]
        best = int(torch.argmax(values))  # first maximum: the lowest index
        if record_scores:
            trace.step_scores.append([[int(i), float(v)] for i, v in zip(kept, values)])
        trace.deletion_order.append(int(kept[best]))
        trace.step_objective.append(float(values[best]))
        trace.tokens_processed += scores.tokens
        trace.forward_passes += scores.passes
        kept = torch.cat([kept[:best], kept[best + 1 :]])
        if on_step is not None:
            on_step(step + 1, deletions)
    trace.wall_s = time.perf_counter() - began
    return trace
