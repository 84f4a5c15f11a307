"""Exact deletion scorers: the objective J after deleting each candidate reasoning token.

Both scorers return the same numbers (DESIGN.md §3), and differ only in cost:

- `NaiveScorer` runs every candidate as its own full sequence, batched. It is the paper's method
  and the reference in tests and benchmarks.
- `PackedScorer` runs the current chain once (the base pass), reads everything before the deleted
  token from it, and packs the suffixes of many candidates into one forward pass over the shared
  base KV cache, with a block attention mask and explicit positions.

A chain is `ids = prompt ‖ kept reasoning ‖ answer`; `prompt_len` and `n_reasoning` locate the
reasoning span, and a candidate is a position j in [0, n_reasoning) of that span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OBJECTIVES = ("joint", "answer")


@dataclass
class Scores:
    """Objective values (sums of log-probs, float64) plus what computing them cost."""

    values: torch.Tensor
    tokens: int
    passes: int


def scored_from(objective: str, prompt_len: int, n_reasoning: int) -> int:
    """First sequence position whose token counts towards the objective (eq. 3 or eq. 4)."""
    if objective == "joint":
        return prompt_len
    if objective == "answer":
        return prompt_len + n_reasoning
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per row, from raw logits, in fp32."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class Scorer:
    """Shared interface: `objective` of the current chain, and `score` of deletion candidates."""

    name = "base"

    def __init__(self, model, objective: str = "joint", token_budget: int = 1024):
        scored_from(objective, 0, 0)  # validates the name
        if token_budget < 1:
            raise ValueError(f"token_budget must be positive, got {token_budget}")
        self.model = model
        self.objective_name = objective
        self.token_budget = token_budget

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def objective(self, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> Scores:
        """J of the chain itself: one full forward pass."""
        ids = ids.to(self.device)
        start = scored_from(self.objective_name, prompt_len, n_reasoning)
        rows = torch.arange(start - 1, len(ids) - 1, device=self.device)
        logits = self.model(input_ids=ids[None], logits_to_keep=rows).logits[0]
        value = target_logprobs(logits, ids[rows + 1]).double().sum()
        return Scores(value.reshape(1).cpu(), tokens=len(ids), passes=1)

    def score(
        self, ids: torch.Tensor, prompt_len: int, n_reasoning: int, candidates: torch.Tensor
    ) -> Scores:
        """J(chain without reasoning token j) for every j in `candidates`."""
        raise NotImplementedError


class NaiveScorer(Scorer):
    """Every candidate is a full sequence of length T-1; `token_budget` tokens per batch."""

    name = "naive"

    @torch.inference_mode()
    def score(self, ids, prompt_len, n_reasoning, candidates):
        ids, candidates = ids.to(self.device), candidates.to(self.device)
        length = len(ids) - 1
        start = scored_from(self.objective_name, prompt_len, n_reasoning - 1)
        rows = torch.arange(start - 1, length - 1, device=self.device)
        columns = torch.arange(length, device=self.device)
        per_batch = max(1, self.token_budget // length)
        values, passes = [], 0
        for chunk in candidates.split(per_batch):
            deleted = prompt_len + chunk
            batch = ids[columns + (columns >= deleted[:, None])]
            logits = self.model(input_ids=batch, logits_to_keep=rows).logits
            values.append(target_logprobs(logits, batch[:, rows + 1]).double().sum(-1))
            passes += 1
        return Scores(torch.cat(values).cpu(), tokens=len(candidates) * length, passes=passes)


class PackedScorer(Scorer):
    """One base pass, then candidates' suffixes packed `token_budget` tokens at a time."""

    name = "packed"

    @torch.inference_mode()
    def score(self, ids, prompt_len, n_reasoning, candidates):
        ids, candidates = ids.to(self.device), candidates.to(self.device)
        total, start = len(ids), scored_from(self.objective_name, prompt_len, n_reasoning)
        positions = torch.arange(total, device=self.device)

        # Base pass: log-softmax rows prompt_len-1 … T-2, i.e. the predictions of tokens prompt_len … T-1.
        out = self.model(
            input_ids=ids[None], use_cache=True, logits_to_keep=positions[prompt_len - 1 : -1]
        )
        rows = torch.log_softmax(out.logits[0].float(), dim=-1)
        base = rows.gather(1, ids[prompt_len:, None])[:, 0].double()
        base = torch.where(positions[prompt_len:] >= start, base, 0.0)
        prefix = torch.cat([base.new_zeros(1), base.cumsum(0)])

        # Everything before the deleted token is unchanged; the token after it now follows x[:q],
        # whose prediction is the base row at q-1.
        deleted = prompt_len + candidates
        skip = rows[candidates, ids[deleted + 1]].double()
        values = prefix[candidates] + torch.where(deleted + 1 >= start, skip, 0.0)

        tokens, passes = total, 1
        for chunk in self._chunks(total - 2 - deleted):
            values[chunk] += self._suffixes(ids, deleted[chunk], out.cache, start)
            tokens += int((total - 2 - deleted[chunk]).sum())
            passes += 1
        return Scores(values.cpu(), tokens=tokens, passes=passes)

    def _chunks(self, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Consecutive groups of candidates whose suffixes fit the token budget."""
        chunks, current, size = [], [], 0
        for i, length in enumerate(lengths.tolist()):
            if length == 0:
                continue
            if current and size + length > self.token_budget:
                chunks.append(current)
                current, size = [], 0
            current.append(i)
            size += length
        if current:
            chunks.append(current)
        return [torch.tensor(c, device=lengths.device) for c in chunks]

    def _suffixes(self, ids, deleted, cache, start) -> torch.Tensor:
        """Sum of scored suffix log-probs for each deleted position, in one packed forward pass.

        Candidate q feeds x[q+1 : T-1] at positions q … T-3 to predict x[q+2 : T]. Its queries see
        base cache columns c < q and, causally, their own suffix only.
        """
        total, device = len(ids), ids.device
        lengths = total - 2 - deleted
        size = int(lengths.sum())
        segment = torch.repeat_interleave(torch.arange(len(deleted), device=device), lengths)
        offset = torch.arange(size, device=device) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        source = deleted[segment] + 1 + offset
        keep = torch.nonzero(source + 1 >= start)[:, 0]

        packed = torch.arange(size, device=device)
        allowed = torch.cat(
            [
                torch.arange(total, device=device)[None, :] < deleted[segment][:, None],
                (segment[:, None] == segment[None, :]) & (packed[None, :] <= packed[:, None]),
            ],
            dim=1,
        )
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
        try:
            logits = self.model(
                input_ids=ids[source][None],
                position_ids=(deleted[segment] + offset)[None],
                attention_mask=mask[None, None],
                cache=cache,
                use_cache=True,
                logits_to_keep=keep,
            ).logits[0]
        finally:
            cache.crop(-size)
        logprobs = target_logprobs(logits, ids[source[keep] + 1]).double()
        return torch.zeros(len(deleted), dtype=torch.float64, device=device).index_add_(0, segment[keep], logprobs)


SCORERS = {cls.name: cls for cls in (NaiveScorer, PackedScorer)}


def make_scorer(name: str, model, objective: str = "joint", token_budget: int = 1024) -> Scorer:
    """Build a scorer by its config name (`naive` or `packed`)."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {sorted(SCORERS)}")
    return SCORERS[name](model, objective=objective, token_budget=token_budget)
