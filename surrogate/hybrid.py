"""The hybrid scorer: the surrogate ranks candidates, the packed scorer verifies only what the ranking leaves open.

Each step runs one base pass. When the surrogate reads attention, only that pass records it (eager
attention, column means taken in hooks); its KV cache and log-probs are the packed scorer's base, and
its first-order scores f(q) the residual surrogate's prior, so nothing is computed twice (docs/SURROGATE.md).
The base pass reruns the chain only from just before the last deletion: the rows before it, and their
attention totals, are the last step's.
A surrogate with a lookahead horizon h takes f_h(q) as its prior instead: h tokens a candidate, packed
over the same base. These and the verification passes run with the fast attention kernel
(`verify_attention`, sdpa by default).

Verification is either the surrogate's top `k`, or adaptive (`epsilon` set): down the ranking in
rounds until the best verified score is safe by a calibrated margin, at most `k_max` candidates
(surrogate/verification.py). Unverified candidates score -inf, so greedy deletes the best verified
one. With k (or k_max and ε = 0) at least the number of candidates this is exact greedy.

With `memory`, the hybrid remembers across steps what verification taught it: each verified
candidate's exact residual (exact score − the surrogate's prediction), added to that candidate's
prediction at later steps; a candidate never verified gets the mean remembered residual. The first step
of a chain verifies every candidate, so each starts with a residual, or with `first_k` only the
surrogate's top `first_k` (docs/SURROGATE.md, "How much a memory of exact scores could add"). With
`refresh` r, later steps also verify the kept tokens within r places of the last deletion, whose
memories that deletion made stale. With `lookahead_refresh` w, the memory keeps the lookahead
correction f_h(q) − f(q) of each candidate too, and reruns it only for the kept tokens within w places
of the last deletion (and those never computed): a deletion far from q changes q's next h tokens'
log-probs little, so the prior's h tokens a candidate are paid near the deletions only, while f(q)
stays fresh from the base pass. Memory combines with either verification: adaptively, it goes down
prediction plus remembered residual with margins by memory age (how many deletions ago each candidate
was verified), calibrated by replaying that memory policy on held-out exact paths
(surrogate/calibration.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch

from exact.scorers import BasePass, PackedScorer, Scorer, Scores
from surrogate.calibration import margin_for
from surrogate.features import (
    attention_implementation,
    candidate_features,
    feature_blocks,
    feature_matrix,
    recording_received_attention,
    token_class_table,
)
from surrogate.models import Surrogate
from surrogate.store import load_surrogate
from surrogate.verification import (
    age_margins,
    choose_and_verify,
    lookahead_to_rerun,
    memory_ages,
    near_deletions,
    remembered,
    verify_remembered,
)


class HybridScorer(Scorer):
    """Surrogate-ranked candidates, verified exactly: a fixed top `k`, or adaptively to miss rate `epsilon`."""

    name = "hybrid"

    def __init__(
        self,
        model,
        surrogate: str | Surrogate = "default",
        objective: str = "joint",
        k: int = 8,
        epsilon: float | None = None,
        k_max: int | None = None,
        surrogate_only: bool = False,
        memory: bool = False,
        first_k: int | None = None,
        refresh: int = 0,
        lookahead_refresh: int | None = None,
        verify: Callable[..., Scorer] = PackedScorer,
        verify_attention: str = "sdpa",
        pruner_model: str | None = None,
        tokenizer=None,
    ):
        """`surrogate`: a Surrogate, or a name for surrogate/store.py (`default`, `first_order[@h]`, a file),
        made for `pruner_model` (default: the model's name). `verify` builds the packed scorer that runs
        the base pass and verifies (with its budgets). `surrogate_only` deletes the top candidate unverified.
        `memory` carries verified residuals to later steps; `first_k`, what it verifies at a
        chain's first step (None: every candidate); `refresh`, how many kept tokens on each side of the last
        deletion it verifies as well; `lookahead_refresh`, how many on each side it reruns the lookahead
        prior for (None: every candidate at every step)."""
        super().__init__(model, objective, tokenizer)
        if k < 1:
            raise ValueError(f"shortlist size k must be at least 1, got {k}")
        if k_max is not None and k_max < 1:
            raise ValueError(f"k_max must be at least 1, got {k_max}")
        self.exact = verify(model, objective=objective)
        if not isinstance(self.exact, PackedScorer):
            raise ValueError(
                f"the hybrid verifies over the packed scorer's base pass; scorer.verify built a "
                f"{type(self.exact).__name__}, which has none (use exact.scorers.PackedScorer)"
            )
        if isinstance(surrogate, str):
            surrogate, _ = load_surrogate(surrogate, pruner_model or model.name_or_path, model)
        self.surrogate = surrogate.eval()
        self.blocks = feature_blocks(surrogate.feature_set)
        if "token_class" in self.blocks and tokenizer is None:
            raise ValueError("the surrogate's token_class features need the pruner's tokenizer")
        self.classes = token_class_table(tokenizer) if "token_class" in self.blocks else None
        if memory and surrogate_only:
            raise ValueError("scorer.memory remembers what it verifies: not with surrogate_only, which verifies none")
        if first_k is not None and (not memory or first_k < 1):
            raise ValueError(f"scorer.first_k ({first_k}) is the first step of scorer.memory: needs memory and ≥ 1")
        if refresh and (not memory or refresh < 0):
            raise ValueError(f"scorer.refresh ({refresh}) renews scorer.memory: needs memory and ≥ 0")
        if lookahead_refresh is not None and (not memory or not surrogate.config["horizon"] or lookahead_refresh < 0):
            raise ValueError(
                f"scorer.lookahead_refresh ({lookahead_refresh}) remembers a lookahead prior: needs scorer.memory, "
                f"a surrogate with a horizon (this one has {surrogate.config['horizon']}) and ≥ 0"
            )
        if surrogate_only:
            k, epsilon = 1, None
        self.remembers = memory
        self.k, self.epsilon, self.k_max, self.first_k, self.refresh = k, epsilon, k_max, first_k, refresh
        self.lookahead_refresh = lookahead_refresh
        policy = {"first_k": first_k, "refresh": refresh, "lookahead_refresh": lookahead_refresh} if memory else None
        self.margin = None if epsilon is None else margin_for(surrogate.calibration, epsilon, policy)
        calibration = surrogate.calibration or {}
        calibration = (calibration.get("memory") or {}) if memory else calibration
        self.round_size = calibration.get("round_size", 2)
        self.spread = calibration.get("spread") if memory else None  # the margin's unit by memory age, in nats
        self.verify_attention = verify_attention
        self._last: tuple[BasePass | None, dict | None] = (None, None)  # the last base pass, and its attention totals

    def settings(self) -> dict:
        """The surrogate and the verification policy, plus the inner packed scorer's budgets after a back-off."""
        if self.epsilon is None:
            policy = {"shortlist_k": self.k, "memory": self.remembers}
        else:
            policy = {"epsilon": self.epsilon, "k_max": self.k_max}
            if self.remembers:  # the margin in spreads of the estimate's error, by memory age (nats)
                policy |= {"margin_spreads": self.margin, "spread_by_age_nats": self.spread}
            else:
                policy["margin_nats"] = self.margin
            policy["memory"] = self.remembers
        if self.remembers:
            policy["first_k"] = self.first_k  # what the first step verifies (None: every candidate)
            policy["refresh"] = self.refresh  # kept tokens each side of the last deletion, verified too
            policy["lookahead_refresh"] = self.lookahead_refresh  # … whose lookahead prior is rerun (None: all)
        inner = {key: value for key, value in self.exact.settings().items() if key != "scorer"}
        config = self.surrogate.config
        surrogate = {"surrogate": config["kind"], "feature_set": config["feature_set"], "horizon": config["horizon"]}
        return {"scorer": self.name, **surrogate, **policy, **inner}

    @torch.inference_mode()
    def objective(self, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> Scores:
        return self.exact.objective(ids, prompt_len, n_reasoning)

    @torch.inference_mode()
    def score(
        self,
        ids,
        prompt_len,
        n_reasoning,
        candidates,
        memory: dict[int, dict[str, float]] | None = None,
        deleted_at: list[int] | None = None,
    ):
        """Exact scores of the verified candidates, -inf for the rest; with memory, `memory` is what the earlier
        steps remembered (reasoning index → {"residual": exact − predicted, "verified_at": the kept length
        then, "lookahead": f_h − f}),
        `deleted_at` where the last step deleted (insertion points among the kept tokens), and the result's
        `remember` what this one changes."""
        reads_attention = any("attention" in block for block in self.blocks)
        tail = len(ids) - prompt_len - n_reasoning  # the answer segment
        last_base, last_store = self._last
        recording = (
            recording_received_attention(self.model, tail, keys_from=prompt_len, previous=last_store)
            if reads_attention
            else nullcontext({})
        )
        with recording as store:
            splittable = not reads_attention  # the recording must see the pass whole
            base = self.exact.base_pass(ids, prompt_len, n_reasoning, splittable=splittable, previous=last_base)
        self._last = (base, store)  # the next step's base pass reruns only from where this chain changes
        cost = {"tokens": base.tokens, "passes": base.passes}
        memory, deleted_at = memory or {}, deleted_at or []

        def exact(chosen: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
            scores = self.exact.score_from(base, candidates[chosen], horizon)
            cost["tokens"] += scores.tokens
            cost["passes"] += scores.passes
            return scores.values

        with attention_implementation(self.model, self.verify_attention):
            prior, lookahead = self.prior(base, candidates, n_reasoning, memory, deleted_at, exact)
            raw = candidate_features(store, base, n_reasoning, candidates, self.blocks, self.classes, prior)
            predicted = self.surrogate(feature_matrix(raw, self.surrogate.feature_set), raw["prior"]).double()
            calibration = self.surrogate.calibration
            if self.remembers:
                known = {j: value["residual"] for j, value in memory.items() if "residual" in value}
                residuals = remembered(known, candidates.tolist())  # None at a chain's first step
                stale, margin = None, self.margin
                if self.refresh and deleted_at:
                    near = near_deletions(deleted_at, self.refresh, n_reasoning)
                    stale = torch.nonzero(torch.isin(candidates.cpu(), near)).flatten()
                if margin is not None and math.isfinite(margin):  # ε = 0 (margin inf) needs no spread
                    verified_at = {j: value["verified_at"] for j, value in memory.items() if "residual" in value}
                    ages = memory_ages(verified_at, candidates.tolist(), n_reasoning)
                    margin = age_margins(ages, self.spread, margin)
                policy = (self.k, self.first_k, stale, margin, self.round_size, self.k_max)
                chosen, verified = verify_remembered(predicted.cpu(), residuals, exact, *policy)
            else:
                chosen, verified = choose_and_verify(predicted, exact, self.k, self.margin, calibration, self.k_max)
        values = torch.full((len(candidates),), -math.inf, dtype=torch.float64)
        values[chosen] = verified.double()
        remember = None
        if self.remembers:
            residuals = (verified.double().cpu() - predicted.cpu()[chosen]).tolist()
            learned = {
                int(candidates[i]): {"residual": r, "verified_at": n_reasoning}
                for i, r in zip(chosen.tolist(), residuals)
            }
            for j, correction in lookahead.items():
                learned.setdefault(j, {})["lookahead"] = correction
            remember = {j: {**memory.get(j, {}), **value} for j, value in learned.items()}
        return Scores(
            values, cost["tokens"], cost["passes"], current=base.objective, verified=len(chosen), remember=remember
        )

    def prior(
        self,
        base,
        candidates: torch.Tensor,
        n_reasoning: int,
        memory: dict[int, dict[str, float]],
        deleted_at: list[int],
        exact: Callable[[torch.Tensor, int], torch.Tensor],
    ) -> tuple[torch.Tensor | None, dict[int, float]]:
        """The candidates' lookahead prior f_h (None without a horizon: candidate_features takes f), and the
        corrections f_h − f this step computed, by reasoning index, for the memory to keep.

        With `lookahead_refresh` w, a remembered correction is reused unless its token is within w places of
        the last deletion; f itself is always this step's (the base pass gives it for free)."""
        horizon = self.surrogate.config["horizon"]
        if not horizon:
            return None, {}
        if self.lookahead_refresh is None:
            return exact(torch.arange(len(candidates)), horizon), {}
        first = base.first_order(candidates).double().cpu()
        known = {j: value["lookahead"] for j, value in memory.items() if "lookahead" in value}
        keys = candidates.tolist()
        fresh = lookahead_to_rerun(keys, known, deleted_at, self.lookahead_refresh, n_reasoning)
        fresh = torch.tensor(fresh, dtype=torch.long)
        correction = torch.tensor([known.get(j, 0.0) for j in keys], dtype=torch.float64)
        if len(fresh):
            correction[fresh] = exact(fresh, horizon).double().cpu() - first[fresh]
        return first + correction, {keys[i]: float(correction[i]) for i in fresh.tolist()}
