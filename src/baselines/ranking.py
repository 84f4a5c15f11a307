"""Static-ranking baselines as pruners: score every reasoning unit once, delete the lowest scores first.

Every baseline fills the same record as greedy pruning (docs/DESIGN.md §6). Its `deletion_order` is the
complete ranking (a static ranking costs nothing more to finish), units are pruner tokens (H2O,
Surprisal, Uniform) or words (TokenSkip), and `step_objective` is empty: no objective is evaluated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from exact.keep import check_keep_fraction, keep_key, kept_indices
from exact.pruner import InvalidInstance
from exact.record import PruneRecord
from exact.result import PruneResult


@dataclass
class Ranking:
    """Units of one chain, their importance (higher is kept longer), and how to turn kept units into text."""

    units: list[str]
    scores: torch.Tensor
    render: Callable[[list[int]], str]
    cost: dict[str, Any] = field(default_factory=dict)


def deletion_order(scores: torch.Tensor) -> list[int]:
    """Indices from least to most important; equal scores go in reading order."""
    return torch.sort(scores.double(), stable=True).indices.tolist()


class RankingPruner:
    """A pruner with the GreedyPruner interface whose order comes from a one-shot ranking.

    A baseline is a subclass that names its `method` and `objective` and implements `rank`; its
    config is one file in conf/pruner/ (docs/DESIGN.md §6).
    """

    method = "ranking"
    objective = "none"
    uses_model = True  # the builder loads the pruner LM for it (src/api.py)
    attention: str | None = None  # the attention implementation it needs (eager: it reads attention weights)

    def __init__(self, tokenizer, model_name: str):
        self.tokenizer = tokenizer
        self.model_name = model_name

    def rank(self, question: str, reasoning: str, answer: str, record_id: str) -> Ranking:
        """The chain's units and their importance (higher is kept longer)."""
        raise NotImplementedError

    def prune(
        self,
        question: str,
        reasoning: str,
        answer: str,
        keep_fractions: Sequence[float] = (0.5,),
        prune_to_end: bool = True,
        record_scores: bool = False,
        max_deletions: int | None = None,
        exact_checks: int = 0,
        id: str = "",
        extra: dict[str, Any] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> PruneResult:
        """Rank the chain's units once; `prune_to_end`, `record_scores`, `max_deletions` and `exact_checks` do not
        apply to a static ranking, which is always complete."""
        fractions = [check_keep_fraction(f) for f in keep_fractions]
        began = time.perf_counter()
        ranking = self.rank(question, reasoning, answer, id)
        n = len(ranking.units)
        if n == 0:
            raise InvalidInstance("reasoning is empty")
        order = deletion_order(ranking.scores)
        if on_step:
            on_step(n, n)
        record = PruneRecord(
            id=id,
            method=self.method,
            objective=self.objective,
            pruner=self.model_name,
            n_reasoning_tokens=n,
            reasoning_tokens=ranking.units,
            deletion_order=order,
            step_objective=[],
            step_perplexity=[],
            pruned={keep_key(f): ranking.render(kept_indices(n, order, f)) for f in fractions},
            cost={"wall_s": round(time.perf_counter() - began, 4), **ranking.cost},
            extra={"question": question, "reasoning": reasoning, "answer": answer, **(extra or {})},
        )
        return PruneResult(record, ranking.render)
