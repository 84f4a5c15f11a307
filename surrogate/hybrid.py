"""The hybrid scorer: the surrogate ranks candidates, the packed scorer verifies only what the ranking leaves open.

Each step runs one base pass. When the surrogate reads attention, only that pass records it (eager
attention, column means taken in hooks); its KV cache and log-probs are the packed scorer's base, and
its first-order scores f(q) the residual surrogate's prior, so nothing is computed twice (docs/SURROGATE.md).
The base pass reruns the chain only from just before the last deletion: the rows before it, and their
attention totals, are the last step's.
A surrogate with a lookahead horizon h takes f_h(q) as its prior instead: h tokens a candidate, packed
over the same base, rerun only within `policy.lookahead_window` places of the last deletion (and for
candidates never computed); elsewhere the remembered correction f_h − f is added to this step's f.
These and the verification passes run with the fast attention kernel (`verify_attention`, sdpa).

Which candidates are verified is the policy's (surrogate/policy.py: one rule, one step function,
shared with the replays that calibrate and measure it). Unverified candidates score -inf, so greedy
deletes the best verified one. What the hybrid remembers along a chain (`ChainMemory`) is its state:
greedy saves it with a partial trace and hands it back on resume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext

import torch

from exact.scorers import BasePass, PackedScorer, Scorer, Scores, rerun_from
from surrogate.calibration import in_force
from surrogate.features import (
    attention_implementation,
    candidate_features,
    feature_blocks,
    feature_matrix,
    recording_received_attention,
    resume_at,
    token_class_table,
)
from surrogate.models import Surrogate
from surrogate.policy import ChainMemory, HybridPolicy, lookahead_to_rerun, verify_step
from surrogate.store import load_surrogate

log = logging.getLogger(__name__)


class HybridScorer(Scorer):
    """Surrogate-ranked candidates, verified exactly as `policy` says (default: the recommended policy)."""

    name = "hybrid"
    method = "hybrid"

    def __init__(
        self,
        model,
        surrogate: str | Surrogate = "default",
        objective: str = "joint",
        policy: HybridPolicy | dict | None = None,
        verify: Callable[..., Scorer] = PackedScorer,
        verify_attention: str = "sdpa",
        pruner_model: str | None = None,
        tokenizer=None,
    ):
        """`surrogate`: a Surrogate, or a name for surrogate/store.py (`default`, `first_order[@h]`, a file),
        made for `pruner_model` (default: the model's name). `policy`: a HybridPolicy, or its fields as a dict.
        `verify` builds the packed scorer that runs the base pass and verifies (with its budgets).
        `tokenizer`: the pruner's, for a surrogate that reads token classes."""
        super().__init__(model, objective)
        policy = policy if isinstance(policy, HybridPolicy) else HybridPolicy(**(policy or {}))
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
        self.policy, self.margins = in_force(surrogate.calibration, policy, surrogate.config["horizon"])
        if self.policy != policy:
            log.warning(
                "the %s surrogate has no calibration, so policy.epsilon cannot be held: the hybrid verifies a fixed "
                "k = %d a step",
                surrogate.config["kind"],
                policy.k_min,
            )
        self.verify_attention = verify_attention
        self.memory = ChainMemory()
        self._last: tuple[BasePass | None, dict | None] = (None, None)  # the last base pass, and its attention totals

    def settings(self) -> dict:
        """The surrogate, the policy in force and its calibrated stop rule, and the packed scorer's budgets."""
        config = self.surrogate.config
        surrogate = {"surrogate": config["kind"], "feature_set": config["feature_set"], "horizon": config["horizon"]}
        rule = None if self.margins is None else {"z": self.margins.z, "spread_by_age_nats": list(self.margins.spread)}
        inner = {key: value for key, value in self.exact.settings().items() if key != "scorer"}
        calibrated = self.surrogate.calibration is not None
        return {
            "scorer": self.name,
            **surrogate,
            "policy": self.policy.to_dict(),
            "calibrated": calibrated,
            "margins": rule,
            **inner,
        }

    def describe(self) -> str:
        """The ranking and the policy in force, in words."""
        config, policy = self.surrogate.config, self.policy
        prior = f"f_{config['horizon']}(q)" if config["horizon"] else "f(q)"
        if config["kind"] == "first_order":
            ranking = f"the model-free prior {prior} (no learned surrogate)"
        elif config["residual"]:
            ranking = f"{prior} + a learned residual ({config['kind']})"
        else:
            ranking = f"a {config['kind']}"
        words = f"{ranking} ranks the candidates, the exact scorer verifies "
        if self.margins is None:
            words += f"its top {policy.k_min} a step (a fixed k)"
        elif math.isinf(self.margins.z):
            words += "every candidate (ε = 0: exact greedy)"
        else:
            first = (
                f"every one whose estimate plus margin reaches the best estimate (at least {policy.k_min})"
                if policy.first_round is None
                else f"its top {policy.first_round} by estimate plus margin"
            )
            words += (
                f"{first}, then {policy.round_size} at a time until the best is safe at a miss rate of "
                f"{policy.epsilon:g} a step (margin {self.margins.z:.3g} spreads)"
            )
        if policy.refresh:
            near = "the kept token" if policy.refresh == 1 else f"the {policy.refresh} kept tokens"
            words += f", and {near} on each side of the last deletion"
        words += "; it remembers what it verified"
        if config["horizon"] and policy.lookahead_window is not None:
            words += f", and reruns {prior} only within {policy.lookahead_window} places of the last deletion"
        return words

    def start(self, state: dict | None) -> None:
        self.memory = ChainMemory.from_json(state)

    def state(self) -> dict:
        return self.memory.to_json()

    @torch.inference_mode()
    def objective(self, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> Scores:
        return self.exact.objective(ids, prompt_len, n_reasoning)

    @torch.inference_mode()
    def score(self, ids, prompt_len, n_reasoning, candidates, kept=None) -> Scores:
        """Exact scores of the candidates the policy verifies, -inf for the rest; `kept` (the original reasoning
        index of each kept token) keys what the hybrid remembers along the chain."""
        reads_attention = any("attention" in block for block in self.blocks)
        tail = len(ids) - prompt_len - n_reasoning  # the answer segment
        last_base, last_store = self._last
        recording = (
            recording_received_attention(self.model, tail, keys_from=prompt_len, previous=last_store)
            if reads_attention
            else nullcontext({})
        )
        first = rerun_from(last_base, ids, prompt_len)  # where this chain differs from the last step's
        first = resume_at(last_store, first, prompt_len) if reads_attention else first  # a checkpoint of the totals
        with recording as store:
            splittable = not reads_attention  # the recording must see the pass whole
            base = self.exact.base_pass(ids, prompt_len, n_reasoning, splittable, previous=last_base, first=first)
        self._last = (base, store)  # the next step's base pass reruns only from where this chain changes
        cost = {"tokens": base.tokens, "passes": base.passes}
        kept = list(range(n_reasoning)) if kept is None else [int(i) for i in kept]
        positions = candidates.tolist()

        def exact(chosen: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
            scores = self.exact.score_from(base, candidates[chosen], horizon)
            cost["tokens"] += scores.tokens
            cost["passes"] += scores.passes
            return scores.values.double().cpu()

        with attention_implementation(self.model, self.verify_attention):
            prior = self.prior(base, candidates, kept, exact)
            raw = candidate_features(store, base, n_reasoning, candidates, self.blocks, self.classes, prior)
            predicted = self.surrogate(feature_matrix(raw, self.surrogate.feature_set), raw["prior"]).double().cpu()
            predicted = predicted.numpy()
            view = self.memory.view(kept, positions, self.policy.refresh)
            verify = lambda chosen: exact(torch.from_numpy(chosen)).numpy()  # noqa: E731
            chosen, verified = verify_step(self.policy, self.margins, predicted, view, verify)
        self.memory.learn([kept[positions[j]] for j in chosen], verified - predicted[chosen], kept)
        values = torch.full((len(candidates),), -math.inf, dtype=torch.float64)
        values[torch.from_numpy(chosen)] = torch.from_numpy(verified)
        return Scores(values, cost["tokens"], cost["passes"], current=base.objective)

    def prior(
        self, base, candidates: torch.Tensor, kept: list[int], exact: Callable[[torch.Tensor, int], torch.Tensor]
    ) -> torch.Tensor | None:
        """The candidates' lookahead prior f_h (None without a horizon: candidate_features takes f): this step's f
        plus the correction f_h − f, rerun where `policy.lookahead_window` says and remembered elsewhere."""
        horizon = self.surrogate.config["horizon"]
        if not horizon:
            return None
        positions = candidates.tolist()
        fresh = lookahead_to_rerun(self.memory, kept, positions, self.policy.lookahead_window)
        first = base.first_order(candidates).double().cpu()
        if fresh:
            index = torch.tensor(fresh, dtype=torch.long)
            correction = (exact(index, horizon) - first[index]).tolist()
            self.memory.lookahead.update({kept[positions[i]]: c for i, c in zip(fresh, correction)})
        remembered = [self.memory.lookahead[kept[j]] for j in positions]
        return first + torch.tensor(remembered, dtype=torch.float64)
