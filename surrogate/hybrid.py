"""The hybrid scorer: the surrogate shortlists candidates, the packed scorer verifies only the shortlist.

Each step runs one base pass with attention recording on: its attention maps give the features, and
its KV cache and log-probs are the packed scorer's base, so nothing is computed twice (DESIGN.md §5).
Candidates off the shortlist score -inf, so greedy deletes the best verified one. With k at least the
number of candidates this is exact greedy, computation for computation.
"""

from __future__ import annotations

import math

import torch

from exact.scorers import PackedScorer, Scorer, Scores
from surrogate.features import candidate_features, feature_matrix, recording_received_attention
from surrogate.models import Surrogate


class HybridScorer(Scorer):
    """Surrogate top-k shortlist, verified exactly; `k=1` lets the surrogate alone choose."""

    name = "hybrid"

    def __init__(
        self,
        model,
        surrogate: Surrogate,
        objective: str = "joint",
        k: int = 8,
        token_budget: int = 1024,
        row_tokens: int = 256,
    ):
        super().__init__(model, objective, token_budget)
        if k < 1:
            raise ValueError(f"shortlist size k must be at least 1, got {k}")
        self.exact = PackedScorer(model, objective, token_budget, row_tokens)
        self.surrogate = surrogate.eval()
        self.k = k

    def settings(self) -> dict:
        return {"scorer": self.name, "shortlist_k": self.k}

    @torch.inference_mode()
    def score(self, ids, prompt_len, n_reasoning, candidates):
        with recording_received_attention(self.model) as attention:
            base = self.exact.base_pass(ids, prompt_len, n_reasoning)
        features = candidate_features(attention, base, n_reasoning, candidates.to(base.ids.device))
        predicted = self.surrogate(feature_matrix(features, self.surrogate.config["feature_set"]))
        shortlist = torch.sort(torch.sort(-predicted, stable=True).indices[: self.k]).values
        verified = self.exact.score_from(base, candidates[shortlist])
        values = torch.full((len(candidates),), -math.inf, dtype=torch.float64)
        values[shortlist] = verified.values
        return Scores(values, tokens=base.tokens + verified.tokens, passes=1 + verified.passes, current=base.objective)
