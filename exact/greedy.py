"""Greedy pruning (paper Alg. 1): repeatedly delete the reasoning token whose removal keeps J highest."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from exact.scorers import Scorer
from exact.sequence import Segments


def check_per_step(per_step: int) -> int:
    """Return `per_step`, or raise unless it is at least 1 (deletions per scoring round)."""
    if per_step < 1:
        raise ValueError(f"per_step must be at least 1, got {per_step} (pruner.per_step)")
    return per_step


@dataclass
class GreedyTrace:
    """What a greedy run produced: the deletion order, J after each deletion, and the cost.

    A trace taken part-way (from `greedy_prune`'s `on_state`) is also the state to resume from.
    """

    deletion_order: list[int] = field(default_factory=list)
    step_objective: list[float | None] = field(default_factory=list)  # J of the full chain, then after each deletion
    step_scores: list[list[list[float]]] | None = None  # per step: [[reasoning index, J after deleting it], ...]
    tokens_processed: int = 0
    forward_passes: int = 0
    wall_s: float = 0.0
    verified_per_step: list[int] = field(default_factory=list)  # candidates scored exactly in each round
    scorer_state: Any = None  # the scorer's `state()` after the last round, handed back to it on resume
    exact_checks: list[dict] | None = None  # per checked round: {"step", "scores": [[index, J], ...], "tokens"}


@dataclass(frozen=True)
class ExactChecks:
    """Rounds at which greedy also scores every candidate with an exact `scorer`, to check the run's choice there.

    The run itself is unchanged: its scorer still decides. `steps` counts deletions made before the round.
    The checks' tokens are recorded with them, not in the run's cost.
    """

    scorer: Scorer
    steps: frozenset[int]

    @classmethod
    def spread(cls, scorer: Scorer, count: int, deletions: int) -> ExactChecks:
        """`count` rounds spread evenly over `deletions`, each in the middle of its share of the run."""
        if count < 0:
            raise ValueError(f"exact_checks must be a count of steps, at least 0, got {count}")
        return cls(scorer, frozenset(int((i + 0.5) * deletions / count) for i in range(min(count, deletions))))


HIT_TOLERANCE = 1e-3  # nats: a choice within this of the exact best is a hit (fp32 differs between packings)


def check_regrets(deletion_order: list[int], exact_checks: list[dict]) -> list[float]:
    """At each checked round, the exact best J minus the exact J of the token the run deleted (0: exact's choice)."""
    regrets = []
    for check in exact_checks:
        scores = dict((int(i), s) for i, s in check["scores"])
        regrets.append(max(scores.values()) - scores[deletion_order[check["step"]]])
    return regrets


def hit_rate(regrets: list[float]) -> float | None:
    """The share of checked rounds whose choice was exact greedy's (within `HIT_TOLERANCE`); None: no checks."""
    return sum(r <= HIT_TOLERANCE for r in regrets) / len(regrets) if regrets else None


def distinct_candidates(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates to score, and for every kept token the candidate that gives the same chain.

    Deleting any token of a run of identical adjacent tokens leaves the same sequence, so only the
    first of each run is scored. Its exact score is shared, and ties resolve to the lowest index.
    """
    first = torch.ones_like(tokens, dtype=torch.bool)
    first[1:] = tokens[1:] != tokens[:-1]
    return torch.nonzero(first)[:, 0], torch.cumsum(first, 0) - 1


def restored(state: GreedyTrace, n: int, deletions: int, record_scores: bool) -> tuple[GreedyTrace, torch.Tensor]:
    """A copy of a saved partial trace to continue, and the reasoning indices it still keeps (in order)."""
    order = state.deletion_order
    if len(order) > deletions or len(set(order)) != len(order) or not all(0 <= i < n for i in order):
        raise ValueError(
            f"a saved state of {len(order)} deletions is not part of {deletions} deletions from {n} tokens"
        )
    if len(state.step_objective) != len(order) + 1:
        raise ValueError(f"saved state has {len(state.step_objective)} objectives for {len(order)} deletions")
    if (state.step_scores is not None) != record_scores:
        raise ValueError(
            f"saved state {'lacks' if record_scores else 'has'} step scores, record_scores={record_scores}"
        )
    gone = set(order)
    kept = torch.tensor([i for i in range(n) if i not in gone], dtype=torch.long)
    return copy.deepcopy(state), kept


def greedy_prune(
    scorer: Scorer,
    segments: Segments,
    deletions: int,
    record_scores: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    per_step: int = 1,
    resume: GreedyTrace | None = None,
    on_state: Callable[[GreedyTrace], None] | None = None,
    checks: ExactChecks | None = None,
) -> GreedyTrace:
    """Delete `deletions` reasoning tokens greedily; ties go to the lowest index.

    With `per_step` m > 1, each scoring round deletes its m best candidates at once (faster, no
    longer exact greedy); J is then known only after the first and the last deletion of a round,
    and the others are recorded as None. Candidates a scorer did not score come back as -inf.
    `on_step(done, deletions)` is called after every deletion (for progress bars).

    `on_state(trace)` gets the partial trace after every scoring round, to persist (it is the live
    trace: serialise or copy it, do not keep or change it). Passed back as `resume`, such a state
    continues the same run: the same deletion order, objectives and step scores as an uninterrupted
    run, with the cost counters and `wall_s` continuing from the saved values (a fresh scorer's own
    warm-up counts too: the packed scorer runs the prompt once more).

    `checks` scores every candidate exactly at some rounds as well (`ExactChecks`), into `trace.exact_checks`.
    """
    n = len(segments.reasoning)
    if not 0 <= deletions <= n:
        raise ValueError(f"cannot make {deletions} deletions from {n} reasoning tokens")
    check_per_step(per_step)
    began = time.perf_counter()
    if resume is None:
        trace, kept = GreedyTrace(step_scores=[] if record_scores else None), torch.arange(n)
    else:
        trace, kept = restored(resume, n, deletions, record_scores)
    wall_before, checking = trace.wall_s, 0.0  # seconds spent on checks, not the run's own
    prompt_len = len(segments.prompt)

    def timed() -> GreedyTrace:
        trace.wall_s = wall_before + time.perf_counter() - began - checking
        return trace

    def objective_now() -> float:
        """J of the current chain by its own pass, when no base pass gave it."""
        scores = scorer.objective(segments.with_kept(kept), prompt_len, len(kept))
        trace.tokens_processed += scores.tokens
        trace.forward_passes += scores.passes
        return float(scores.values[0])

    if not trace.step_objective:
        trace.step_objective.append(objective_now())
    if checks is not None and trace.exact_checks is None:
        trace.exact_checks = []

    scorer.start(copy.deepcopy(trace.scorer_state))
    while len(trace.deletion_order) < deletions:
        candidates, same_as = distinct_candidates(segments.reasoning[kept])
        scores = scorer.score(segments.with_kept(kept), prompt_len, len(kept), candidates, kept=kept)
        trace.scorer_state = scorer.state()
        trace.tokens_processed += scores.tokens
        trace.forward_passes += scores.passes
        trace.verified_per_step.append(int(torch.isfinite(scores.values).sum()))
        if trace.step_objective[-1] is None:
            trace.step_objective[-1] = scores.current if scores.current is not None else objective_now()
        if record_scores:
            values = scores.values[same_as]
            trace.step_scores.append([[int(i), float(v)] for i, v in zip(kept, values) if math.isfinite(v)])
        if checks is not None and len(trace.deletion_order) in checks.steps:
            check_began = time.perf_counter()
            exact = checks.scorer.score(segments.with_kept(kept), prompt_len, len(kept), candidates, kept=kept)
            values = exact.values[same_as]
            scored = [[int(i), float(v)] for i, v in zip(kept, values)]
            trace.exact_checks.append({"step": len(trace.deletion_order), "scores": scored, "tokens": exact.tokens})
            checking += time.perf_counter() - check_began
        ranked = torch.sort(-scores.values, stable=True).indices  # best first; ties: the lowest index
        take = min(per_step, deletions - len(trace.deletion_order), int(torch.isfinite(scores.values).sum()))
        chosen = candidates[ranked[:take]]
        trace.deletion_order += kept[chosen].tolist()
        trace.step_objective += [float(scores.values[ranked[0]])] + [None] * (take - 1)
        kept = kept[~torch.isin(torch.arange(len(kept)), chosen)]
        if on_state is not None:
            on_state(timed())
        if on_step is not None:
            on_step(len(trace.deletion_order), deletions)
    if trace.step_objective[-1] is None:
        trace.step_objective[-1] = objective_now()
    return timed()
