"""The hybrid's verification policy, and the one step function that carries it out.

At each greedy step the surrogate predicts every candidate's score, the hybrid verifies some of them
exactly, and greedy deletes the best verified one. `verify_step` decides which, and the same code
runs live (surrogate/hybrid.py) and in replays along labelled exact paths (calibration, evaluation,
the bench's step agreement), so what is calibrated and reported is what runs.

What the hybrid knows of a candidate when its step begins (`ChainMemory`):
- its prediction p, in nats;
- its residual r = exact − p, from the last step that verified it;
- the age of that memory: deletions since then, or never verified.

Its estimate is p + r. A candidate never verified gets p plus the mean of the residuals known now
(remembered, or verified earlier in this step): the surrogate's offset, as far as it is known. A
chain's first step is the case where nothing is known yet.

The rule, per step:
1. Verify the kept tokens within `refresh` places of the last deletion (a deletion changes its
   neighbours' context most, so their memories are stale) and every candidate whose bound reaches
   the best estimate, at least the top `k_min` by bound (or just the top `first_round`, when set).
   A candidate's bound is its estimate plus z · spread[age]: z the calibrated margin for the miss
   rate ε, spread the error of an estimate of that age (surrogate/calibration.py). The best
   estimate stands in for the best exact score that step 2 compares with, so one round is usually
   enough.
2. Then, in rounds of `round_size`, verify the next by bound until the best exact score verified
   reaches every unverified candidate's bound, or `k_max` have been verified by rank.

With ε = 0 the margin is infinite, every bound reaches, and with no cap the hybrid verifies everything
in one round: exact greedy.
With `epsilon` None, or an uncalibrated surrogate, it verifies the top `k_min` by estimate: fixed k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

AGES = (1, 2, 4, 8)  # age buckets of a memory (deletions since verified): ≤ 1, ≤ 2, ≤ 4, ≤ 8, older, never


@dataclass(frozen=True)
class HybridPolicy:
    """Which candidates the hybrid verifies exactly at each step (conf/scorer/hybrid.yaml)."""

    epsilon: float | None = 0.02  # tolerated chance that a step misses exact greedy's best candidate; None: fixed k_min
    k_min: int = 4  # at least this many verified by rank at every step (fixed k: exactly this many)
    k_max: int | None = None  # at most this many by rank (None: no cap; ε = 0 with no cap is exact greedy)
    first_round: int | None = None  # candidates a step's first round verifies by rank (None: by reach, at least k_min)
    round_size: int = 4  # candidates per further round, until the stop rule holds
    refresh: int = 1  # kept tokens each side of the last deletion, verified every step (their memory is stale)
    lookahead_window: int | None = 6  # rerun a lookahead prior only this near the last deletion (None: every step)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError, naming the field, for a setting out of range or one that contradicts another."""
        if self.epsilon is not None and not 0 <= self.epsilon < 1:
            raise ValueError(f"policy.epsilon is a miss rate in [0, 1) (or null for a fixed k), got {self.epsilon}")
        if self.k_min < 1:
            raise ValueError(f"policy.k_min must be at least 1, got {self.k_min}")
        if self.k_max is not None and self.k_max < self.k_min:
            raise ValueError(f"policy.k_max ({self.k_max}) is below policy.k_min ({self.k_min})")
        if self.epsilon is None and self.k_max is not None:
            raise ValueError(
                f"policy.k_max ({self.k_max}) caps the ε rule; with policy.epsilon null the hybrid verifies "
                f"k_min ({self.k_min}) a step"
            )
        if self.epsilon is not None and self.k_max == self.k_min:
            raise ValueError(
                f"policy.k_max equals policy.k_min ({self.k_min}): no room for policy.epsilon; set epsilon: null for "
                "a fixed k"
            )
        if self.first_round is not None and self.epsilon is None:
            raise ValueError(
                f"policy.first_round ({self.first_round}) sizes the ε rule's first round; with policy.epsilon null the "
                f"hybrid verifies k_min ({self.k_min}) a step"
            )
        if self.first_round is not None and self.first_round < self.k_min:
            raise ValueError(f"policy.first_round ({self.first_round}) is below policy.k_min ({self.k_min})")
        if self.round_size < 1:
            raise ValueError(f"policy.round_size must be at least 1, got {self.round_size}")
        if self.refresh < 0:
            raise ValueError(f"policy.refresh must be at least 0, got {self.refresh}")
        if self.lookahead_window is not None and self.lookahead_window < 0:
            raise ValueError(f"policy.lookahead_window must be at least 0 (or null), got {self.lookahead_window}")

    @property
    def fixed(self) -> bool:
        """True when the hybrid verifies the top k_min a step, with no stop rule."""
        return self.epsilon is None

    def as_fixed(self) -> HybridPolicy:
        """This policy with a fixed k_min (for a surrogate without calibration)."""
        return HybridPolicy(
            None, self.k_min, round_size=self.round_size, refresh=self.refresh, lookahead_window=self.lookahead_window
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """A short name: `eps=E` (or `k=K` for a fixed k), then each other field that differs from the defaults."""
        shown = ("epsilon", "k_min", "k_max", "first_round", "round_size") if self.fixed else ("epsilon",)
        default = HybridPolicy()
        rest = [
            f"{key}={value}"
            for key, value in asdict(self).items()
            if key not in shown and value != getattr(default, key)
        ]
        return ",".join([f"k={self.k_min}" if self.fixed else f"eps={self.epsilon:g}", *rest])


@dataclass(frozen=True)
class Margins:
    """A calibrated stop rule: `z` spreads of margin (inf: never stop early), `spread` nats by memory age bucket."""

    z: float
    spread: tuple[float, ...]

    def of(self, ages: Sequence[int | None]) -> np.ndarray:
        """Each candidate's margin in nats, from its memory's age (None: never verified)."""
        if math.isinf(self.z):
            return np.full(len(ages), math.inf)
        return self.z * np.array([self.spread[age_bucket(age)] for age in ages], dtype=np.float64)


def age_bucket(age: int | None) -> int:
    """Index of a memory `age` deletions old (None: never verified) into a spread (len(AGES) + 2 buckets)."""
    if age is None:
        return len(AGES) + 1
    return next((i for i, top in enumerate(AGES) if age <= top), len(AGES))


@dataclass
class StepView:
    """One step's candidates as the memory sees them (arrays by candidate)."""

    residual: np.ndarray  # remembered exact − predicted (nan: never verified)
    ages: list[int | None]  # deletions since last verified (None: never)
    stale: np.ndarray  # indices of the candidates within `refresh` places of the last deletion
    deleted_at: list[int]  # where the last step deleted: insertion points among the kept tokens now


@dataclass
class ChainMemory:
    """What the hybrid remembers along one chain, keyed by original reasoning index (JSON round-trips)."""

    residual: dict[int, float] = field(default_factory=dict)  # exact − predicted, at the last verification
    verified_at: dict[int, int] = field(default_factory=dict)  # the kept length then
    lookahead: dict[int, float] = field(default_factory=dict)  # the lookahead correction f_h − f, when last computed
    kept: list[int] | None = None  # the kept reasoning indices of the last step

    def view(self, kept: Sequence[int], candidates: Sequence[int], refresh: int) -> StepView:
        """The candidates (positions among `kept`, the original indices kept now) as this memory sees them."""
        keys = [kept[j] for j in candidates]
        residual = np.array([self.residual.get(key, math.nan) for key in keys], dtype=np.float64)
        ages = [self.verified_at[key] - len(kept) if key in self.verified_at else None for key in keys]
        deleted_at = self.deleted_at(kept)
        near = near_deletions(deleted_at, refresh, len(kept))
        stale = np.array([i for i, j in enumerate(candidates) if j in near], dtype=np.int64)
        return StepView(residual, ages, stale, deleted_at)

    def deleted_at(self, kept: Sequence[int]) -> list[int]:
        """Insertion points among `kept` of what was deleted since the last step (none at a chain's first)."""
        if self.kept is None:
            return []
        return np.searchsorted(np.asarray(kept), sorted(set(self.kept) - set(kept))).tolist()

    def learn(self, keys: Sequence[int], residuals: Sequence[float], kept: Sequence[int]) -> None:
        """Remember the residuals verified at this step (original indices `keys`), and the chain now."""
        for key, value in zip(keys, residuals):
            self.residual[int(key)] = float(value)
            self.verified_at[int(key)] = len(kept)
        self.kept = [int(i) for i in kept]

    def to_json(self) -> dict:
        return {
            "residual": [[k, v] for k, v in sorted(self.residual.items())],
            "verified_at": [[k, v] for k, v in sorted(self.verified_at.items())],
            "lookahead": [[k, v] for k, v in sorted(self.lookahead.items())],
            "kept": self.kept,
        }

    @classmethod
    def from_json(cls, state: dict | None) -> ChainMemory:
        if state is None:
            return cls()
        pairs = {name: {int(k): v for k, v in state[name]} for name in ("residual", "verified_at", "lookahead")}
        return cls(**pairs, kept=state["kept"])


def near_deletions(deleted_at: Sequence[int], window: int, kept: int) -> set[int]:
    """The kept positions within `window` places of the deletions, each given as its insertion point among the
    `kept` tokens now (window 1: the kept token on each side)."""
    return {i for gap in deleted_at for i in range(gap - window, gap + window) if 0 <= i < kept}


def lookahead_to_rerun(
    memory: ChainMemory, kept: Sequence[int], candidates: Sequence[int], window: int | None
) -> list[int]:
    """Indices into `candidates` whose lookahead correction is computed this step: every one with `window`
    None; else those never computed and those within `window` places of the last deletion."""
    if window is None:
        return list(range(len(candidates)))
    near = near_deletions(memory.deleted_at(kept), window, len(kept))
    return [i for i, j in enumerate(candidates) if kept[j] not in memory.lookahead or j in near]


def estimates(predicted: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Prediction plus residual (nan: never verified, which gets the mean of the residuals known, or 0)."""
    known = ~np.isnan(residual)
    return predicted + np.where(known, residual, residual[known].mean() if known.any() else 0.0)


def top(score: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """Indices of the `k` highest `score`s outside `exclude`, best first (ties: the lowest index)."""
    order = np.argsort(-score, kind="stable")
    return order[~np.isin(order, exclude)][:k]


def verify_step(
    policy: HybridPolicy,
    margins: Margins | None,
    predicted: np.ndarray,
    view: StepView,
    verify: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(candidates verified, their exact scores) at one step, by the module's rule; `verify(indices)` gives exact
    scores. `margins` None (a fixed k) ranks by estimate and stops after the first round."""
    predicted = np.asarray(predicted, dtype=np.float64)
    n = len(predicted)
    residual = view.residual.copy()  # nan: never verified; what this step verifies replaces what was remembered
    margin = np.zeros(n) if margins is None else margins.of(view.ages)
    limit = n if policy.k_max is None else min(policy.k_max, n)

    def bound() -> np.ndarray:
        return estimates(predicted, residual) + margin

    chosen, values, ranked = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), 0
    stale = view.stale
    size = policy.k_min if policy.first_round is None else policy.first_round
    if margins is not None and n and (policy.first_round is None or math.isinf(margins.z)):  # all that can reach
        reach = bound() >= estimates(predicted, residual).max()
        reach[stale] = False
        size = max(size, int(reach.sum()))
    while True:
        batch = np.concatenate([stale, top(bound(), min(size, limit - ranked), np.concatenate([chosen, stale]))])
        ranked, stale, size = ranked + len(batch) - len(stale), stale[:0], policy.round_size
        if len(batch):
            exact = np.asarray(verify(batch), dtype=np.float64)
            chosen, values = np.concatenate([chosen, batch]), np.concatenate([values, exact])
            residual[batch] = exact - predicted[batch]
        if margins is None or ranked >= limit or len(chosen) == n:
            return chosen, values
        left = np.ones(n, dtype=bool)
        left[chosen] = False
        if values.max() >= bound()[left].max():
            return chosen, values
