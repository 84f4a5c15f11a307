"""The baselines that rank the pruner LM's reasoning tokens: H2O, Surprisal and Uniform.

Each encodes an instance exactly as the greedy pruner does, so its units are the same tokens.
"""

from __future__ import annotations

import torch

from exact.pruner import ChainEncoder, token_renderer
from exact.sequence import Segments
from src.baselines.ranking import Ranking, RankingPruner
from src.baselines.token_scores import h2o_scores, surprisal_scores, uniform_scores


class TokenRankingPruner(ChainEncoder, RankingPruner):
    """A ranking of the reasoning's pruner-LM tokens by `token_scores`."""

    def __init__(
        self,
        model,
        tokenizer,
        system_prompt: str | None = None,
        answer_delimiter: str = "\n",
        max_reasoning_tokens: int | None = None,
        model_name: str | None = None,
    ):
        super().__init__(tokenizer, model_name or getattr(model, "name_or_path", type(model).__name__))
        self.model = model
        self.system_prompt = system_prompt
        self.answer_delimiter = answer_delimiter
        self.max_reasoning_tokens = max_reasoning_tokens

    def token_scores(self, segments: Segments, record_id: str) -> torch.Tensor:
        raise NotImplementedError

    def rank(self, question: str, reasoning: str, answer: str, record_id: str) -> Ranking:
        segments = self.encode(question, reasoning, answer)
        scores = self.token_scores(segments, record_id)
        units = [self.tokenizer.decode([t]) for t in segments.reasoning.tolist()]
        return Ranking(units, scores, token_renderer(self.tokenizer, segments.reasoning), self.cost(segments))

    def cost(self, segments: Segments) -> dict[str, int]:
        """One forward pass over the chain."""
        return {
            "tokens_processed": len(segments.prompt) + len(segments.reasoning) + len(segments.answer),
            "forward_passes": 1,
        }


class H2OPruner(TokenRankingPruner):
    """H2O: tokens that receive the least attention from later positions go first (the model runs eager)."""

    method, objective, attention = "h2o", "attention_received", "eager"

    def token_scores(self, segments: Segments, record_id: str) -> torch.Tensor:
        return h2o_scores(self.model, segments)


class SurprisalPruner(TokenRankingPruner):
    """Surprisal: the most predictable tokens (lowest −log p) go first."""

    method, objective = "surprisal", "surprisal"

    def token_scores(self, segments: Segments, record_id: str) -> torch.Tensor:
        return surprisal_scores(self.model, segments)


class UniformPruner(TokenRankingPruner):
    """Uniform: a random order, seeded per record id (reproducible in every run and worker)."""

    method, objective = "uniform", "random"

    def __init__(self, model, tokenizer, seed: int = 0, **encoding):
        super().__init__(model, tokenizer, **encoding)
        self.seed = seed

    def token_scores(self, segments: Segments, record_id: str) -> torch.Tensor:
        return uniform_scores(len(segments.reasoning), self.seed, record_id)

    def cost(self, segments: Segments) -> dict[str, int]:
        return {"tokens_processed": 0, "forward_passes": 0}
