"""The notebook-sized API: a `GreedyPruner` prunes one (question, reasoning, answer) at a time.

pruner = GreedyPruner(model, tokenizer)          # src.api.GreedyPruner.from_pretrained("Qwen/...") loads them
result = pruner.prune(question, reasoning, answer, keep_fractions=[0.5])
print(result.show(0.5))        # the chain with deleted tokens marked
result.at(0.5), result.deletion_order, result.to_frame()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from exact.greedy import ExactChecks, GreedyTrace, check_per_step, greedy_prune
from exact.keep import check_keep_fraction, keep_key, kept_indices, n_deletions, n_kept
from exact.record import PruneRecord
from exact.result import PruneResult
from exact.scorers import PackedScorer, Scorer
from exact.sequence import Segments, encode


class InvalidInstance(ValueError):
    """An instance that cannot be pruned: empty reasoning, or more tokens than the configured maximum."""


def encode_instance(
    tokenizer,
    question: str,
    reasoning: str,
    answer: str,
    system_prompt: str | None = None,
    answer_delimiter: str = "\n",
    max_reasoning_tokens: int | None = None,
) -> Segments:
    """The instance's token segments, or InvalidInstance when the reasoning is empty or too long."""
    segments = encode(tokenizer, question, reasoning, answer, system_prompt, answer_delimiter)
    n = len(segments.reasoning)
    if n == 0:
        raise InvalidInstance("reasoning is empty after tokenization")
    if max_reasoning_tokens is not None and n > max_reasoning_tokens:
        raise InvalidInstance(f"reasoning has {n} tokens, more than max_reasoning_tokens={max_reasoning_tokens}")
    return segments


def token_renderer(tokenizer, reasoning_ids) -> Callable[[list[int]], str]:
    """Kept token indices -> the decoded reasoning text."""
    return lambda kept: tokenizer.decode(reasoning_ids[kept].tolist(), clean_up_tokenization_spaces=False)


class ChainEncoder:
    """Encodes instances as a pruner LM reads them, with the pruner's `tokenizer`, `system_prompt`,
    `answer_delimiter` and `max_reasoning_tokens` (set by its constructor)."""

    tokenizer: Any
    system_prompt: str | None
    answer_delimiter: str
    max_reasoning_tokens: int | None

    def encode(self, question: str, reasoning: str, answer: str) -> Segments:
        return encode_instance(
            self.tokenizer,
            question,
            reasoning,
            answer,
            self.system_prompt,
            self.answer_delimiter,
            self.max_reasoning_tokens,
        )


ScorerFactory = Callable[..., Scorer]  # (model, objective=) -> Scorer: a class or a config's partial


class GreedyPruner(ChainEncoder):
    """Greedy pruning of reasoning chains with a causal LM (docs/DESIGN.md §1–3).

    `scorer` is a ready Scorer (which brings its objective), or a factory called with the model and
    `objective` (default joint): `PackedScorer` (the default) or `NaiveScorer` for exact greedy, any
    other Scorer (the hybrid: surrogate.hybrid.HybridScorer), or a config node's partial
    (`conf/scorer/*.yaml`).
    """

    uses_model = True  # the builder loads the pruner LM for it (src/api.py)
    attention: str | None = None  # no attention implementation of its own (the hybrid switches per pass)

    def __init__(
        self,
        model,
        tokenizer,
        scorer: Scorer | ScorerFactory = PackedScorer,
        objective: str | None = None,
        per_step: int = 1,
        system_prompt: str | None = None,
        answer_delimiter: str = "\n",
        max_reasoning_tokens: int | None = None,
        model_name: str | None = None,
    ):
        self.tokenizer = tokenizer
        if not isinstance(scorer, Scorer):
            scorer = scorer(model, objective=objective or "joint")
        elif objective is not None and scorer.objective_name != objective:
            raise ValueError(f"the scorer scores the {scorer.objective_name!r} objective, not {objective!r}")
        self.scorer = scorer
        self.per_step = check_per_step(per_step)
        self.system_prompt = system_prompt
        self.answer_delimiter = answer_delimiter
        self.max_reasoning_tokens = max_reasoning_tokens
        self.model_name = model_name or getattr(model, "name_or_path", type(model).__name__)

    def prune(
        self,
        question: str,
        reasoning: str,
        answer: str,
        keep_fractions: Sequence[float] = (0.5,),
        prune_to_end: bool = False,
        record_scores: bool = False,
        max_deletions: int | None = None,
        exact_checks: int = 0,
        id: str = "",
        extra: dict[str, Any] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        resume: GreedyTrace | None = None,
        on_state: Callable[[GreedyTrace], None] | None = None,
    ) -> PruneResult:
        """Prune one instance down to the smallest keep fraction (or to nothing with `prune_to_end`).

        `max_deletions` stops earlier (the first steps of a long chain, as labels); `pruned` then holds
        only the keep fractions reached.
        `exact_checks` rounds, spread over the run, also score every candidate exactly (packed), to check the
        scorer's choice there (`record.exact_checks`; the run itself is unchanged).
        `on_state` receives the partial trace after every scoring round (see `greedy_prune`); passing
        a saved one back as `resume`, with the same instance and settings, finishes the same record.
        """
        fractions = [check_keep_fraction(f) for f in keep_fractions]
        segments = self.encode(question, reasoning, answer)
        n = len(segments.reasoning)
        deletions = n_deletions(n, fractions, prune_to_end)
        if max_deletions is not None:
            deletions = min(deletions, max_deletions)
        render = token_renderer(self.tokenizer, segments.reasoning)
        checks = None
        if exact_checks:
            reference = PackedScorer(self.scorer.model, objective=self.scorer.objective_name)
            checks = ExactChecks.spread(reference, exact_checks, deletions)
        trace = greedy_prune(
            self.scorer, segments, deletions, record_scores, on_step, self.per_step, resume, on_state, checks
        )
        scored = [self._n_scored(n - d, len(segments.answer)) for d in range(len(trace.step_objective))]
        record = PruneRecord(
            id=id,
            method=self.scorer.method,
            objective=self.scorer.objective_name,
            pruner=self.model_name,
            n_reasoning_tokens=n,
            reasoning_tokens=[self.tokenizer.decode([t]) for t in segments.reasoning.tolist()],
            deletion_order=trace.deletion_order,
            step_objective=trace.step_objective,
            step_perplexity=[None if j is None else math.exp(-j / k) for j, k in zip(trace.step_objective, scored)],
            pruned={
                keep_key(f): render(kept_indices(n, trace.deletion_order, f))
                for f in fractions
                if n - n_kept(n, f) <= len(trace.deletion_order)
            },
            cost={
                **self.scorer.settings(),
                "per_step": self.per_step,
                "wall_s": round(trace.wall_s, 4),
                "tokens_processed": trace.tokens_processed,
                "forward_passes": trace.forward_passes,
                "verified_per_step": trace.verified_per_step,
            },
            step_scores=trace.step_scores,
            exact_checks=trace.exact_checks,
            extra={"question": question, "reasoning": reasoning, "answer": answer, **(extra or {})},
        )
        return PruneResult(record, render)

    def _n_scored(self, n_reasoning: int, n_answer: int) -> int:
        return n_answer + (n_reasoning if self.scorer.objective_name == "joint" else 0)
