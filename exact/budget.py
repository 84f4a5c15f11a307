"""The packed scorer's memory budget, and how it backs off when a forward pass runs out of device memory.

A `Budget` caps the tokens of one suffix pass (`token_budget`), the length of one packed row
(`row_tokens`), and says whether passes over the whole chain run in chunks (`split_base`). When a
pass fails with `torch.OutOfMemoryError`, `attempt` halves the budget (until the failed pass would be
split), frees the allocator's cache and reports None, so the scorer runs the same work again under
the smaller budget, which stays for later steps (docs/DESIGN.md §4).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

log = logging.getLogger("exact.scorers")
T = TypeVar("T")
AUTO = "auto"
LOGITS_BYTES = 256 * 2**20  # what the fp32 logits of one pass may take under `token_budget: auto`


def vocab_budget(model, share: float = 1.0) -> int:
    """`token_budget: auto`: the most tokens, a power of two, whose fp32 logits (vocab × 4 bytes a token) fit in
    `share` × LOGITS_BYTES: 1024 for SmolLM2's 49,152-token vocabulary, 256 for Gemma 3's 262,144 (docs/MEMORY.md)."""
    vocab = model.config.get_text_config().vocab_size
    tokens = max(1, int(share * LOGITS_BYTES // (4 * vocab)))
    return 1 << (tokens.bit_length() - 1)


def resolve_budget(token_budget: int | str, model, share: float = 1.0) -> int:
    """A scorer's `token_budget`: the number given, or `auto` sized by the model's vocabulary (`vocab_budget`)."""
    if token_budget == AUTO:
        return vocab_budget(model, share)
    if isinstance(token_budget, str):
        raise ValueError(f"token_budget must be a positive number of tokens or {AUTO!r}, got {token_budget!r}")
    return token_budget


@dataclass
class Budget:
    """Token budgets in force, and the out-of-memory back-off that shrinks them."""

    token_budget: int = 1024
    row_tokens: int = 256
    split_base: bool = False
    min_budget: int = 64  # the floor below which a back-off gives up
    backoffs: int = 0

    def __post_init__(self):
        for name in ("token_budget", "row_tokens", "min_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def settings(self) -> dict:
        """What a record's cost reports: nothing, unless a back-off (or `split_base`) changed the defaults' meaning."""
        if not (self.backoffs or self.split_base):
            return {}
        return {
            "token_budget": self.token_budget,
            "row_tokens": self.row_tokens,
            "split_base": self.split_base,
            "backoffs": self.backoffs,
        }

    def attempt(
        self,
        run: Callable[[], T],
        tokens: int,
        what: str,
        cannot: str | None = None,
        rows: bool = False,
        base: bool = False,
    ) -> T | None:
        """`run()`, or None after an out-of-memory error made the budget smaller (see `back_off`)."""
        try:
            return run()
        except torch.OutOfMemoryError as error:
            self.back_off(error, tokens, what, cannot, rows, base)
        # Out of the except block, the failed pass's tensors (held by the traceback) are gone.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None

    def back_off(
        self,
        error: Exception,
        tokens: int,
        what: str,
        cannot: str | None = None,
        rows: bool = False,
        base: bool = False,
    ) -> None:
        """Halve `token_budget` until it is below the `tokens` of the failed pass; with `rows` cap `row_tokens`
        at it, with `base` (a pass over the chain) split such passes from now on. Raise instead when `cannot`
        says why the pass cannot shrink, or when the budget would fall below `min_budget`."""
        budget = self.token_budget // 2
        while budget >= tokens:
            budget //= 2
        if cannot is None and budget < self.min_budget:
            cannot = f"halving it again would go below the floor of min_budget={self.min_budget} tokens"
        if cannot is not None:
            raise torch.OutOfMemoryError(
                f"{what} of {tokens} tokens ran out of memory at token_budget={self.token_budget}, "
                f"row_tokens={self.row_tokens} after {self.backoffs} back-off(s), and {cannot}; free device "
                f"memory, or use a smaller model or shorter chains ({error})"
            ) from error
        old = (self.token_budget, self.row_tokens)
        self.token_budget = budget
        if rows:
            self.row_tokens = min(self.row_tokens, budget)
        if base:
            self.split_base = True
        self.backoffs += 1
        log.warning(
            "%s of %d tokens ran out of memory; token_budget %d → %d, row_tokens %d → %d%s (back-off %d)",
            what,
            tokens,
            old[0],
            self.token_budget,
            old[1],
            self.row_tokens,
            ", base pass split" if base else "",
            self.backoffs,
        )
