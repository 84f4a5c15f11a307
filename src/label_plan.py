"""What exact labelling costs for a model and a data set, and which chains to label.

`scoring_rate` measures the exact packed scorer's tokens/s on the spot; `Chain` prices a chain's greedy pruning by
exact and hybrid scorers from the cost model (src/cost_model.py); `pick` chooses chains spread over lengths
(strata), up to a count or a time budget.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from exact.keep import n_kept
from exact.scorers import PackedScorer
from exact.sequence import Segments
from src.cost_model import chain_tokens


@dataclass(frozen=True)
class Chain:
    """One record's segment lengths in the pruner's tokens."""

    id: str
    prompt: int
    n: int  # reasoning tokens
    answer: int

    def deletions(self, keep: float) -> int:
        return self.n - n_kept(self.n, keep)

    def tokens(self, method: str, keep: float, horizon: int = 0, verified: int = 0) -> float:
        """Tokens greedy pruning down to `keep` runs through the model with `method` (cost model)."""
        return chain_tokens(method, self.n, self.deletions(keep), self.prompt, self.answer, horizon, verified)


@torch.inference_mode()
def scoring_rate(scorer: PackedScorer, segments: Segments, candidates: int = 16, repeats: int = 2) -> float:
    """Tokens/s of the exact packed scorer on one chain: one step over `candidates` candidates spread over it (its
    base pass included), the best of `repeats` after a warm-up. This is the rate labelling runs at: with a large
    vocabulary the LM head and the log-normalizers of every scored row take most of it."""
    n = len(segments.reasoning)
    ids, prompt_len = segments.with_kept(torch.arange(n)), len(segments.prompt)
    chosen = torch.linspace(0, n - 1, min(candidates, n)).round().long().unique()
    rates = []
    for _ in range(repeats + 1):
        began = time.perf_counter()
        scores = scorer.score(ids, prompt_len, n, chosen)
        rates.append(scores.tokens / (time.perf_counter() - began))
    return max(rates[1:])


def strata(chains: Sequence[Chain], count: int) -> list[list[Chain]]:
    """`chains` by length into `count` bins of about equal size (shortest first)."""
    ordered = sorted(chains, key=lambda c: (c.n, c.id))
    size = len(ordered) / max(count, 1)
    bins = [ordered[round(k * size) : round((k + 1) * size)] for k in range(count)]
    return [b for b in bins if b]


def pick(
    chains: Sequence[Chain],
    count: int | None,
    seconds: float | None = None,
    price=None,
    bins: int = 4,
    seed: int = 0,
) -> list[Chain]:
    """Chains spread over lengths: a random one from each length bin in turn (`strata`), until `count` are taken, or
    (count None) until the next would take the total `price(chain)` past `seconds`."""
    rng = random.Random(seed)
    pools = [rng.sample(b, len(b)) for b in strata(chains, bins)]
    taken: list[Chain] = []
    spent = 0.0
    while any(pools):
        for pool in pools:
            if not pool:
                continue
            if count is not None and len(taken) >= count:
                return taken
            chain = pool[0]
            cost = price(chain) if price is not None else 0.0
            if count is None and seconds is not None and spent + cost > seconds:
                pool.pop(0)  # too dear for what is left; a shorter one may still fit
                continue
            taken.append(pool.pop(0))
            spent += cost
    return taken


def length_summary(chains: Sequence[Chain]) -> dict:
    """Min, median and max reasoning length."""
    lengths = [c.n for c in chains]
    if not lengths:
        return {"chains": 0}
    return {"chains": len(lengths), "min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}
