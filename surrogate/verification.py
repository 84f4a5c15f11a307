"""Which candidates the hybrid verifies exactly.

Fixed k verifies the surrogate's top k. Adaptive verification goes down the surrogate's ranking in
rounds and stops once the best verified exact score beats every unverified candidate's calibrated
prediction plus a margin:

    stop when  max_v s(v)  ≥  a·ŝ(u_next) + mean_v [s(v) − a·ŝ(v)] + margin

where ŝ is the surrogate's prediction, a its scale in nats, v the verified candidates and u_next the
best unverified one. The mean residual of the verified candidates fixes the step's offset (Pearson
training leaves it free). The margin for a miss rate ε comes from surrogate/calibration.py. ε = 0
never stops early, so with `k_max` ≥ all candidates the hybrid is exact greedy.

A hybrid with memory ranks by prediction plus each candidate's remembered residual (exact − predicted,
from the last step that verified it), an estimate already in nats (`verify_remembered`). With fixed k
it verifies the top k of that ranking. Adaptively it goes down it with the same rule, scale 1 and no
offset, but each candidate u has its own margin: the calibrated margin z times the spread of the
estimate's error at the age of u's memory (`age_margins`; deletions since u was last verified, or
never). A residual verified at the step before is nearly exact; one never verified is the mean of
the others. Verification goes down the bound estimate + margin, and stops when the best verified
score reaches the highest bound left. A deletion changes most the context of the tokens next to it,
so their memories go stale first: with `refresh` r the kept tokens within r places of the last step's
deletions are verified as well, in the first round (`near_deletions`). The same holds for the
remembered lookahead correction f_h − f: it is rerun only near the last deletion, and for candidates
never computed (`lookahead_to_rerun`).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence

import torch

AGES = (1, 2, 4, 8)  # age buckets of a remembered residual (deletions since verified): ≤ 1, ≤ 2, ≤ 4, ≤ 8, older, never


def age_bucket(age: int | None) -> int:
    """Index of a memory `age` deletions old (None: never verified) into a calibration's spread (len(AGES) + 2)."""
    if age is None:
        return len(AGES) + 1
    return next((i for i, top in enumerate(AGES) if age <= top), len(AGES))


def memory_ages(verified_at: dict[int, int], keys: list[int], kept: int) -> list[int | None]:
    """How many deletions ago each key was last verified, from the kept length then (`verified_at`) and now
    (`kept`); None for a key never verified."""
    return [verified_at[key] - kept if key in verified_at else None for key in keys]


def age_margins(ages: list[int | None], spread: list[float], margin: float) -> torch.Tensor:
    """Each candidate's margin in nats: `margin` times the spread of the estimate's error at its memory's age."""
    return margin * torch.tensor([spread[age_bucket(age)] for age in ages], dtype=torch.float64)


def top_k(predicted: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest predictions, in index order (ties: the lowest index)."""
    return torch.sort(torch.sort(-predicted, stable=True).indices[:k]).values


def remembered(memory: dict[int, float], keys: list[int]) -> torch.Tensor | None:
    """The remembered residual of each key, or None when none is remembered (a chain's first step). A key never
    verified gets the mean of the others' residuals: the surrogate's offset in nats, as far as it is known."""
    known = [memory[key] for key in keys if key in memory]
    if not known:
        return None
    offset = sum(known) / len(known)
    return torch.tensor([memory.get(key, offset) for key in keys], dtype=torch.float64)


def near_deletions(deleted_at: Sequence[int], refresh: int, kept: int) -> torch.Tensor:
    """The kept positions within `refresh` places of the deletions, each given as its insertion point among
    the `kept` tokens now (refresh 1: the kept token on each side)."""
    near = {i for gap in deleted_at for i in range(gap - refresh, gap + refresh) if 0 <= i < kept}
    return torch.tensor(sorted(near), dtype=torch.long)


def lookahead_to_rerun(
    positions: Sequence[int], known: Container[int], deleted_at: Sequence[int], window: int, kept: int
) -> list[int]:
    """Indices into `positions` (candidates' places among the `kept` tokens) whose lookahead correction a hybrid
    with `lookahead_refresh` `window` reruns: those it has none remembered for (`known` holds the places it
    has), and those within `window` places of the last deletion."""
    near = set(near_deletions(deleted_at, window, kept).tolist())
    return [i for i, place in enumerate(positions) if place not in known or place in near]


def verify_adaptively(
    predicted: torch.Tensor,
    verify: Callable[[torch.Tensor], torch.Tensor],
    margin: float | torch.Tensor,
    scale: float = 1.0,
    round_size: int = 2,
    k_max: int | None = None,
    offset: bool = True,
    first: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices verified, their exact scores): `verify(indices)` in rounds down the ranking until the rule stops it.

    `margin` is one for all, or each candidate's (then the rounds go down prediction plus margin, the bound).
    `offset` takes the step's offset from the verified residuals (a prediction without memory); without it
    `predicted` is already in nats. The candidates `first` names go in the first round, whatever their rank."""
    pending = first if first is not None else torch.zeros(0, dtype=torch.long)  # verified in the first round
    margin = torch.as_tensor(margin, dtype=torch.float64)
    calibrated = scale * predicted.double()
    bound = calibrated + margin
    order = torch.sort(-(predicted.double() if margin.dim() == 0 else bound), stable=True).indices
    order = order[~torch.isin(order, pending)]
    limit = len(order) if k_max is None else max(min(k_max - len(pending), len(order)), 0)
    finite = bool(torch.isfinite(margin).all())
    step = round_size if finite else len(order)  # no margin, no early stop: one round
    chosen, values, ranked = pending[:0], torch.zeros(0, dtype=torch.float64), 0
    while ranked < limit or len(pending):
        batch = torch.cat([pending, order[ranked : min(ranked + step, limit)]])
        ranked, pending = ranked + len(batch) - len(pending), pending[:0]
        chosen, values = torch.cat([chosen, batch]), torch.cat([values, verify(batch).double().cpu()])
        if ranked < limit and finite:
            shift = (values - calibrated[chosen]).mean() if offset else 0.0
            if values.max() >= bound[order[ranked]] + shift:
                break
    return chosen, values


def choose_and_verify(
    predicted: torch.Tensor,
    verify: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    margin: float | None = None,
    calibration: dict | None = None,
    k_max: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices verified, their exact scores): the top `k` when `margin` is None, else adaptive verification
    with the calibration's scale and round size."""
    if margin is None:
        chosen = top_k(predicted, k)
        return chosen, verify(chosen)
    calibration = calibration or {}
    scale, round_size = calibration.get("scale", 1.0), calibration.get("round_size", 2)
    return verify_adaptively(predicted, verify, margin, scale, round_size, k_max)


def verify_remembered(
    predicted: torch.Tensor,
    residuals: torch.Tensor | None,
    verify: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    first_k: int | None = None,
    stale: torch.Tensor | None = None,
    margin: float | torch.Tensor | None = None,
    round_size: int = 2,
    k_max: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices verified, their exact scores) for a hybrid with memory. At a chain's first step (`residuals`
    None) its top `first_k` by prediction, or every candidate when `first_k` is None. After it, the ranking
    is prediction plus remembered residual, in nats: its top k and the candidates `stale` names (those next
    to the last deletion); or, with a `margin` (one for all, or each candidate's: `age_margins`), the stale
    ones and then down estimate plus margin in rounds of `round_size` until the best verified score reaches
    the highest left, at most `k_max`."""
    if residuals is None:
        chosen = torch.arange(len(predicted)) if first_k is None else top_k(predicted, first_k)
        return chosen, verify(chosen)
    estimate = predicted + residuals
    stale = stale if stale is not None else torch.zeros(0, dtype=torch.long)
    if margin is not None:
        return verify_adaptively(estimate, verify, margin, 1.0, round_size, k_max, offset=False, first=stale)
    chosen = torch.unique(torch.cat([top_k(estimate, k), stale]))
    return chosen, verify(chosen)
