"""The cost model of docs/DESIGN.md §7: tokens run through the model for one greedy step, and for a chain, by the
naive, packed and hybrid scorers. bench_gpu prices its projections with it; a test holds it to the scorers' own
token counts."""

from __future__ import annotations

from collections.abc import Sequence

METHODS = ("naive", "packed", "hybrid")


def suffix_length(n: int, answer: int, j: int) -> int:
    """Tokens an exact suffix reruns for candidate j of n reasoning tokens before `answer` answer tokens."""
    return n + answer - 2 - j


def step_tokens(
    method: str, n: int, prompt: int, answer: int, horizon: int = 0, verified: int | Sequence[int] = 0
) -> float:
    """Tokens of one step over n reasoning tokens, every one a candidate, without the prompt's own pass (which
    the packed scorers run once per prompt) and without row padding. The hybrid's base pass is whole (a chain's
    first step) and its lookahead covers every candidate; `verified` is the candidates it verifies, as reasoning
    positions, or a count priced at the mean suffix length."""
    suffixes = [suffix_length(n, answer, j) for j in range(n)]
    base = n + answer + 1
    if method == "naive":
        return n * (prompt + n + answer - 1)
    if method == "packed":
        return base + sum(suffixes)
    if method == "hybrid":
        exact = (
            min(verified, n) * sum(suffixes) / n if isinstance(verified, int) else sum(suffixes[j] for j in verified)
        )
        return base + sum(min(horizon, s) for s in suffixes) + exact
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def chain_tokens(method: str, n: int, deletions: int, prompt: int, answer: int, horizon: int = 0, k: int = 0) -> float:
    """Tokens to make `deletions` greedy deletions from n reasoning tokens: J of the chain, the packed scorers'
    prompt pass, and every step (the hybrid's at its first step's price, `k` verified: an upper bound)."""
    once = (prompt + n + answer) + (0 if method == "naive" else prompt - 1)
    return once + sum(step_tokens(method, m, prompt, answer, horizon, k) for m in range(n - deletions + 1, n + 1))
