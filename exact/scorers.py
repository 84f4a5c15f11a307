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

import heapq
import math
from dataclasses import dataclass

import torch
from transformers import DynamicCache

OBJECTIVES = ("joint", "answer")


@dataclass
class Scores:
    """Objective values (sums of log-probs, float64) plus what computing them cost.

    `current` is J of the chain itself when the scorer got it for free (from a base pass).
    """

    values: torch.Tensor
    tokens: int
    passes: int
    current: float | None = None


@dataclass
class BasePass:
    """One forward pass over the current chain: everything the candidates' scores reuse."""

    ids: torch.Tensor
    prompt_len: int
    start: int  # first scored position
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), batch 1
    logits: torch.Tensor  # rows prompt_len-1 … T-2
    norm: torch.Tensor  # their log normalizers (float64)
    prefix: torch.Tensor  # prefix[k] = Σ scored log-probs of positions prompt_len … prompt_len+k-1
    tokens: int  # tokens this pass ran through the model

    @property
    def objective(self) -> float:
        return float(self.prefix[-1])


def scored_from(objective: str, prompt_len: int, n_reasoning: int) -> int:
    """First sequence position whose token counts towards the objective (eq. 3 or eq. 4)."""
    if objective == "joint":
        return prompt_len
    if objective == "answer":
        return prompt_len + n_reasoning
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def log_normalizer(logits: torch.Tensor, rows_per_chunk: int = 64) -> torch.Tensor:
    """log Σ exp(logits) per row, as float64.

    fp32 `logsumexp` over cache-sized chunks of rows (about 3× faster than one call on a big block);
    the caller subtracts in float64. Unlike fp32 `log_softmax`, whose rounding is biased by ~1e-6
    nats per token and adds up over a chain, this is unbiased.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    norm = torch.cat([torch.logsumexp(chunk, dim=-1) for chunk in flat.split(rows_per_chunk)])
    return norm.double().reshape(logits.shape[:-1])


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per row, from raw logits, in float64."""
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double() - log_normalizer(logits)


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

    def settings(self) -> dict:
        """What a record's `cost` says about how it was scored."""
        return {"scorer": self.name}

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
        value = target_logprobs(logits, ids[rows + 1]).sum()
        return Scores(value.reshape(1).cpu(), tokens=len(ids), passes=1)

    def score(self, ids: torch.Tensor, prompt_len: int, n_reasoning: int, candidates: torch.Tensor) -> Scores:
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
            values.append(target_logprobs(logits, batch[:, rows + 1]).sum(-1))
            passes += 1
        return Scores(torch.cat(values).cpu(), tokens=len(candidates) * length, passes=passes)


class PackedScorer(Scorer):
    """One base pass, then candidates' suffixes packed into rows of `row_tokens`, `token_budget` tokens a pass.

    Packing many suffixes into one row keeps the matrix products large; capping the row length keeps
    the wasted attention between different candidates' blocks (row² per row) small.
    """

    name = "packed"

    def __init__(self, model, objective: str = "joint", token_budget: int = 1024, row_tokens: int = 256):
        super().__init__(model, objective, token_budget)
        if row_tokens < 1:
            raise ValueError(f"row_tokens must be positive, got {row_tokens}")
        self.row_tokens = row_tokens
        self._prompt: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def _prompt_kv(self, prompt: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        """KV of the prompt but its last token, run once per prompt (pruning never changes it); and its cost."""
        if self._prompt is not None and torch.equal(self._prompt[0], prompt):
            return self._prompt[1], 0
        kv = []
        if len(prompt) > 1:
            out = self.model(input_ids=prompt[None, :-1], use_cache=True, logits_to_keep=1)
            kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        self._prompt = (prompt.clone(), kv)
        return kv, len(prompt) - 1

    def _cache(self, kv: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> DynamicCache:
        """A fresh cache holding `kv` for `batch` rows; the tensors it is built from stay untouched."""
        cache = DynamicCache(config=self.model.config)
        for layer, (keys, values) in enumerate(kv):
            cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
        return cache

    @torch.inference_mode()
    def base_pass(self, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> BasePass:
        """Run the current chain once over the cached prompt; keep its KV cache, logit rows and prefix sums."""
        ids = ids.to(self.device)
        start = scored_from(self.objective_name, prompt_len, n_reasoning)
        positions = torch.arange(len(ids), device=self.device)
        prompt_kv, prompt_tokens = self._prompt_kv(ids[:prompt_len])
        tail = positions[prompt_len - 1 :]
        # Logit rows prompt_len-1 … T-2 are the predictions of tokens prompt_len … T-1.
        out = self.model(
            input_ids=ids[tail][None],
            position_ids=tail[None],
            cache=self._cache(prompt_kv, 1),
            use_cache=True,
            logits_to_keep=torch.arange(len(tail) - 1, device=self.device),
        )
        logits = out.logits[0]
        norm = log_normalizer(logits)
        logprobs = logits.gather(1, ids[prompt_len:, None])[:, 0].double() - norm
        logprobs = torch.where(positions[prompt_len:] >= start, logprobs, 0.0)
        return BasePass(
            ids=ids,
            prompt_len=prompt_len,
            start=start,
            kv=[(layer.keys, layer.values) for layer in out.cache.layers],
            logits=logits,
            norm=norm,
            prefix=torch.cat([logprobs.new_zeros(1), logprobs.cumsum(0)]),
            tokens=len(tail) + prompt_tokens,
        )

    @torch.inference_mode()
    def score_from(self, base: BasePass, candidates: torch.Tensor) -> Scores:
        """Scores of `candidates` over an existing base pass (its cost is not counted here)."""
        ids, candidates = base.ids, candidates.to(self.device)
        total = len(ids)
        # Everything before the deleted token is unchanged; the token after it now follows x[:q],
        # whose prediction is the base row at q-1.
        deleted = base.prompt_len + candidates
        skip = base.logits[candidates, ids[deleted + 1]].double() - base.norm[candidates]
        values = base.prefix[candidates] + torch.where(deleted + 1 >= base.start, skip, 0.0)
        tokens = passes = 0
        for layout in self._layout((total - 2 - deleted).tolist()):
            values += self._suffixes(ids, deleted, layout, base.kv, base.start)
            tokens += len(layout) * max(size for _, size in layout)
            passes += 1
        return Scores(values.cpu(), tokens=tokens, passes=passes, current=base.objective)

    def score(self, ids, prompt_len, n_reasoning, candidates):
        base = self.base_pass(ids, prompt_len, n_reasoning)
        scores = self.score_from(base, candidates)
        return Scores(scores.values, scores.tokens + base.tokens, scores.passes + 1, current=base.objective)

    def _layout(self, lengths: list[int]) -> list[list[tuple[list[int], int]]]:
        """Forward passes, each a list of rows (candidate indices, packed length) within the budgets.

        Suffixes go longest first onto the currently shortest row, so rows come out nearly equal
        and padding to the widest row wastes little.
        """
        items = sorted(((length, i) for i, length in enumerate(lengths) if length > 0), reverse=True)
        if not items:
            return []
        n_rows = max(1, math.ceil(sum(length for length, _ in items) / self.row_tokens))
        heap = [(0, r, []) for r in range(n_rows)]
        for length, i in items:
            size, r, members = heapq.heappop(heap)
            members.append(i)
            heapq.heappush(heap, (size + length, r, members))
        rows = sorted(((members, size) for size, _, members in heap if members), key=lambda row: -row[1])
        per_pass = max(1, self.token_budget // rows[0][1])
        return [rows[k : k + per_pass] for k in range(0, len(rows), per_pass)]

    def _suffixes(self, ids, deleted, layout, base_kv, start) -> torch.Tensor:
        """Sum of scored suffix log-probs for every candidate in `layout`, in one batched forward pass.

        Candidate q feeds x[q+1 : T-1] at positions q … T-3 to predict x[q+2 : T]. Its queries see
        base cache columns c < q and, causally, their own suffix only. Rows are padded to one width;
        padding sees one column and is never read.
        """
        total, device = len(ids), ids.device
        width = max(size for _, size in layout)
        shape = (len(layout), width)
        inputs = torch.zeros(shape, dtype=torch.long, device=device)
        positions = torch.zeros(shape, dtype=torch.long, device=device)
        targets = torch.zeros(shape, dtype=torch.long, device=device)
        owner = torch.zeros(shape, dtype=torch.long, device=device)
        keep = torch.zeros(shape, dtype=torch.bool, device=device)
        allowed = torch.zeros((*shape, total + width), dtype=torch.bool, device=device)
        allowed[:, :, 0] = True
        for b, (row, size) in enumerate(layout):
            members = torch.tensor(row, device=device)
            lengths = total - 2 - deleted[members]
            segment = torch.repeat_interleave(torch.arange(len(row), device=device), lengths)
            offset = torch.arange(size, device=device) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
            q = deleted[members][segment]
            source = q + 1 + offset
            inputs[b, :size], positions[b, :size], targets[b, :size] = ids[source], q + offset, ids[source + 1]
            owner[b, :size], keep[b, :size] = members[segment], source + 1 >= start
            causal = torch.arange(size, device=device)
            allowed[b, :size, :total] = torch.arange(total, device=device)[None, :] < q[:, None]
            allowed[b, :size, total : total + size] = (segment[:, None] == segment[None, :]) & (
                causal[None, :] <= causal[:, None]
            )
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
        logits = self.model(
            input_ids=inputs,
            position_ids=positions,
            attention_mask=mask[:, None],
            cache=self._cache(base_kv, len(layout)),
            logits_to_keep=keep,
        ).logits
        logprobs = target_logprobs(logits, targets[keep])
        return torch.zeros(len(deleted), dtype=torch.float64, device=device).index_add_(0, owner[keep], logprobs)


SCORERS = {cls.name: cls for cls in (NaiveScorer, PackedScorer)}


def make_scorer(name: str, model, objective: str = "joint", **options) -> Scorer:
    """Build a scorer by its config name (`naive` or `packed`); `options` are its budgets."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {sorted(SCORERS)}")
    return SCORERS[name](model, objective=objective, **options)
