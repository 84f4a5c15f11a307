"""Exact deletion scorers: the objective J after deleting each candidate reasoning token.

Both scorers return the same numbers (docs/DESIGN.md §3), and differ only in cost:

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
from typing import Any

import torch
from transformers import DynamicCache

from exact.budget import AUTO, Budget, resolve_budget

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
    """One forward pass over the current chain: everything the candidates' scores reuse.

    Row r (0 ≤ r < T - prompt_len) is the prediction made at position prompt_len-1+r.
    """

    ids: torch.Tensor
    prompt_len: int
    start: int  # first scored position
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), batch 1
    entropy: torch.Tensor  # entropy (nats) of the predictions of rows prompt_len-1 … T-2, float32
    norm: torch.Tensor  # their log normalizers (float64)
    prefix: torch.Tensor  # prefix[k] = Σ scored log-probs of positions prompt_len … prompt_len+k-1
    logprobs: torch.Tensor  # logprobs[r] = log p(x[prompt_len+r] | x[:prompt_len+r]), float64, scored or not
    skip: torch.Tensor  # skip[r] = log p(x[prompt_len+r+1] | x[:prompt_len+r]), float64: the row read at the next token
    tokens: int  # tokens this pass ran through the model
    passes: int = 1  # forward passes it took (more than one when split)

    @property
    def objective(self) -> float:
        return float(self.prefix[-1])

    def head(self, candidates: torch.Tensor) -> torch.Tensor:
        """The exact score of each candidate j through position q+1 (q = prompt_len + j, the deleted position).

        The tokens before q keep their base log-probs, and x[q+1] now follows x[:q], whose prediction is
        the base row at q-1 (`skip`). Only the tokens from q+2 on need the model.
        """
        candidates = candidates.to(self.prefix.device)
        after = self.prompt_len + candidates + 1
        return self.prefix[candidates] + torch.where(after >= self.start, self.skip[candidates], 0.0)

    def first_order(self, candidates: torch.Tensor) -> torch.Tensor:
        """f(j): the score of deleting candidate j were the later tokens' log-probs unchanged (docs/SURROGATE.md).

        f(j) = head(j) + [J − prefix(j+2)]: exact but for the deletion's effect on x[q+2:], which is
        what a residual surrogate learns. Free: it reads the base pass only.
        """
        candidates = candidates.to(self.prefix.device)
        return self.head(candidates) + (self.prefix[-1] - self.prefix[candidates + 2])


def rerun_from(previous: BasePass | None, ids: torch.Tensor, prompt_len: int) -> int:
    """The first position a base pass over `ids` must run, given an earlier base pass (or None).

    Everything before the first position c where the chains differ is unchanged, but the rows at c-2 and
    c-1 read x[c] (as the skip and the next token), so the pass reruns from c-2: from prompt_len-1, all
    of the chain, when there is no earlier pass or its prompt differs.
    """
    whole = prompt_len - 1
    if previous is None or previous.prompt_len != prompt_len:
        return whole
    n = min(len(ids), len(previous.ids))
    differ = torch.nonzero(ids[:n] != previous.ids[:n].to(ids.device))
    same = int(differ[0, 0]) if len(differ) else n
    return max(whole, same - 2) if same >= prompt_len else whole


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
    flat = logits.reshape(-1, logits.shape[-1])  # converted chunk by chunk: no fp32 copy of a bf16 block
    norm = torch.cat([torch.logsumexp(chunk.float(), dim=-1) for chunk in flat.split(rows_per_chunk)])
    return norm.double().reshape(logits.shape[:-1])


def row_entropy(logits: torch.Tensor, norm: torch.Tensor, rows_per_chunk: int = 64) -> torch.Tensor:
    """The entropy (nats) of each row's prediction, from raw logits and their log normalizers, as float32."""
    flat, norm = logits.reshape(-1, logits.shape[-1]), norm.reshape(-1)
    parts = []
    for chunk, log_z in zip(flat.split(rows_per_chunk), norm.split(rows_per_chunk)):
        logp = chunk.float() - log_z.float()[:, None]
        parts.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(parts).reshape(logits.shape[:-1])


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per row, from raw logits, in float64."""
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double() - log_normalizer(logits)


def attention_windows(model) -> dict[str | None, int | None]:
    """How far back each kind of layer attends, as the model's config says: {layer type: window} for a model with
    several kinds of layers (Gemma 2/3, Qwen2 with sliding windows), which takes a mask for each kind; else
    {None: window} for one mask that every layer reads (None: no window). A query at position p sees keys at
    positions p - window + 1 … p (transformers' `sliding_window_overlay`)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or [])
    unknown = kinds - {"full_attention", "sliding_attention"}
    if unknown:
        raise ValueError(
            f"the packed scorer cannot mask {type(model).__name__}'s {sorted(unknown)} layers; "
            f"use scorer=naive for this model"
        )
    if not kinds:  # one kind of layer: every layer has the window (Mistral), or none has (Llama, GPT-2)
        return {None: window}
    windows = {kind: window if kind == "sliding_attention" else None for kind in kinds}
    return windows if len(windows) > 1 else {None: next(iter(windows.values()))}


def block_masks(model, allowed: torch.Tensor, distance: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    """The additive 4D attention mask(s) of a packed pass: `allowed` (rows, queries, keys) says which keys each
    query may see, `distance` their positions apart (query − key); each kind of layer also drops keys beyond its
    window (`attention_windows`). One mask, or one per layer type for a model that takes them so."""
    dtype = model.dtype

    def additive(window: int | None) -> torch.Tensor:
        seen = allowed if window is None else allowed & (distance < window)
        return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill_(~seen, torch.finfo(dtype).min)[
            :, None
        ]

    windows = attention_windows(model)
    if None in windows:
        return additive(windows[None])
    return {kind: additive(window) for kind, window in windows.items()}


class Scorer:
    """Shared interface: `objective` of the current chain, and `score` of deletion candidates.

    A scorer may score only some candidates (the others come back as -inf) and may carry a state along
    one chain: `start(state)` begins a chain (state None) or continues one from what `state()` returned,
    which greedy saves with its partial trace without reading it.
    """

    name = "base"
    method = "greedy"  # what records pruned with this scorer are called

    def __init__(self, model, objective: str = "joint"):
        scored_from(objective, 0, 0)  # validates the name
        self.model = model
        self.objective_name = objective

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

    def score(
        self,
        ids: torch.Tensor,
        prompt_len: int,
        n_reasoning: int,
        candidates: torch.Tensor,
        kept: torch.Tensor | None = None,
    ) -> Scores:
        """J(chain without reasoning token j) for every j in `candidates`; `kept` is the original index of each
        reasoning token of the chain (for a scorer whose state follows tokens)."""
        raise NotImplementedError

    def start(self, state: Any = None) -> None:
        """Begin a chain, or continue one from a saved `state()`; stateless scorers have nothing to do."""

    def state(self) -> Any:
        """What this scorer carries along the chain so far (JSON-serialisable), or None."""
        return None


class NaiveScorer(Scorer):
    """Every candidate is a full sequence of length T-1; `token_budget` tokens per batch (`auto`: twice the packed
    scorer's, as its batches keep the logits of the scored rows only)."""

    name = "naive"

    def __init__(self, model, objective: str = "joint", token_budget: int | str = AUTO):
        super().__init__(model, objective)
        token_budget = resolve_budget(token_budget, model, share=2.0)
        if token_budget < 1:
            raise ValueError(f"token_budget must be positive, got {token_budget}")
        self.token_budget = token_budget

    @torch.inference_mode()
    def score(self, ids, prompt_len, n_reasoning, candidates, kept=None):
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

    Memory. `token_budget` caps the tokens B of one suffix pass (a single suffix longer than it still
    gets a pass of its own), and so what that pass needs on top of the weights and the base KV cache.
    A pass of R rows of width W over a chain of T tokens holds, in fp32 (4 bytes):

    - logits: B × vocab × 4 (Joint keeps every row, Answer only the answer's);
    - the rows' KV: R × (T + W) × layers × 2 × kv_heads × head_dim × 4, each row with its own copy
      of the base cache; the mask, R × W × (T + W) × 5; one layer's activations, ~B × (4 hidden +
      3 intermediate) × 4; eager attention also heads × R × W × (T + W) × 4.

    `token_budget: auto` sizes the budget by the vocabulary: the power of two of tokens whose logits fit in
    256 MiB (exact/budget.py). SmolLM2-135M (vocab 49152; 30 layers × 3 kv heads × 64) needs 197 KB of
    logits and 46 KB of KV a token: budget 1024 ≈ 201 MB of logits (Gemma 3's 262,144: 1 MB a token,
    budget 256), plus 4 × 1256 × 46 KB ≈ 231 MB of row KV at T = 1000.
    The base pass runs the whole chain at once, its T × vocab logits only while it runs (187 MB at
    T = 1000), unless `split_base`: then it runs in chunks of `token_budget` tokens that extend the
    cache. Either way it keeps per-row numbers only (log-probs, skips, normalizers, entropies), so what
    a step keeps grows with T as the KV cache does (docs/MEMORY.md).

    Back-off. A forward pass that runs out of device memory is run again under a halved budget
    (`Budget`, exact/budget.py): a suffix pass is regrouped into fewer rows, a single row re-packed
    into narrower rows, a pass over the chain split into chunks (`split_base`). Regrouping leaves every
    score bit for bit the same; re-packing or splitting moves scores by fp32 rounding (~1e-6 nats).
    A base pass that must be seen whole (`splittable=False`: the hybrid's attention recording) raises.
    """

    name = "packed"

    def __init__(
        self,
        model,
        objective: str = "joint",
        token_budget: int | str = AUTO,
        row_tokens: int = 256,
        split_base: bool = False,
        min_budget: int = 64,
    ):
        super().__init__(model, objective)
        token_budget = resolve_budget(token_budget, model)
        self.budget = Budget(token_budget, row_tokens, split_base, min_budget)
        self._packing_budget = token_budget  # lays out the suffix rows' padding, whatever budget is in force
        self._prompt: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def settings(self) -> dict:
        """The scorer's name; after an out-of-memory back-off (or with `split_base`) also the budgets in force."""
        return {"scorer": self.name, **self.budget.settings()}

    # Passes over the chain.

    def _chain(self, ids: torch.Tensor, first: int, kv: list, rows_from: int | None = None, whole: bool = False):
        """Run ids[first:] at their positions over the cache `kv` (batch 1): in one forward pass, or with
        `split_base` (and not `whole`) in chunks of `token_budget` tokens that extend the cache.

        With `rows_from`, also reads the predictions made at positions rows_from … T-2. Returns the KV of
        the whole chain, their entropies, log normalizers (float64), log-probs of the next token and of the
        one after it (the last row's is padding), and the number of forward passes.
        """
        total, device = len(ids), ids.device
        step = self.budget.token_budget if self.budget.split_base and not whole else total - first
        cache = self._cache(kv, 1)
        entropies, norms, nexts, afters, passes = [], [], [], [], 0
        for a in range(first, total, step):
            positions = torch.arange(a, min(a + step, total), device=device)
            keep = 1 if rows_from is None else positions[(positions >= rows_from) & (positions < total - 1)] - a
            out = self.model(
                input_ids=ids[positions][None],
                position_ids=positions[None],
                cache=cache,
                use_cache=True,
                logits_to_keep=keep,
            )
            passes += 1
            if rows_from is None:
                continue
            logits, at = out.logits[0], positions[keep]
            norm = log_normalizer(logits)
            norms.append(norm)
            entropies.append(row_entropy(logits, norm))
            nexts.append(logits.gather(1, ids[at + 1, None])[:, 0].double() - norm)
            afters.append(logits.gather(1, ids[(at + 2).clamp(max=total - 1), None])[:, 0].double() - norm)
            del out, logits
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if rows_from is None:
            return kv, passes
        return kv, torch.cat(entropies), torch.cat(norms), torch.cat(nexts), torch.cat(afters), passes

    def _prompt_kv(self, prompt: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        """KV of the prompt but its last token, run once per prompt (pruning never changes it); and its cost."""
        if self._prompt is not None and torch.equal(self._prompt[0], prompt):
            return self._prompt[1], 0
        kv = []
        while len(prompt) > 1:
            tokens = len(prompt) - 1
            run = self.budget.attempt(
                lambda: self._chain(prompt[:-1], 0, []),
                min(tokens, self.budget.token_budget) if self.budget.split_base else tokens,
                "the prompt pass",
                base=True,
            )
            if run is not None:
                kv = run[0]
                break
        self._prompt = (prompt.clone(), kv)
        return kv, len(prompt) - 1

    def _cache(self, kv: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> DynamicCache:
        """A fresh cache holding `kv` for `batch` rows; the tensors it is built from stay untouched.

        Built without the model's config, every layer keeps all its keys, sliding-window layers too (a cache
        built from the config would keep their last window only); the attention masks apply the windows.
        """
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(kv):
            cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
        return cache

    @torch.inference_mode()
    def objective(self, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> Scores:
        """J of the chain itself: one full forward pass (chunks once `split_base`), backing off on OOM."""
        ids = ids.to(self.device)
        start = scored_from(self.objective_name, prompt_len, n_reasoning)
        while True:
            if self.budget.split_base:
                run = lambda: self._chain(ids, 0, [], rows_from=start - 1)  # noqa: E731
            else:
                run = lambda: super(PackedScorer, self).objective(ids, prompt_len, n_reasoning)  # noqa: E731
            tokens = min(len(ids), self.budget.token_budget) if self.budget.split_base else len(ids)
            result = self.budget.attempt(run, tokens, "the objective pass", base=True)
            if isinstance(result, Scores):
                return result
            if result is not None:
                return Scores(result[3].sum().reshape(1).cpu(), tokens=len(ids), passes=result[-1])

    @torch.inference_mode()
    def base_pass(
        self,
        ids: torch.Tensor,
        prompt_len: int,
        n_reasoning: int,
        splittable: bool = True,
        previous: BasePass | None = None,
        first: int | None = None,
    ) -> BasePass:
        """Run the current chain once over the cached prompt; keep its KV cache and per-row numbers.

        With `previous`, a base pass over an earlier chain (the last step's), the rows up to where the two
        chains first differ are read from it and only the rest is run (`rerun_from`): a deletion changes
        nothing before it. `first` runs from that position instead, at or before where they differ (where
        state kept by forward hooks resumes). `splittable=False` says the pass must run whole (forward hooks
        watch it): out of memory, it raises.
        """
        ids = ids.to(self.device)
        start = scored_from(self.objective_name, prompt_len, n_reasoning)
        differ = rerun_from(previous, ids, prompt_len)
        if first is not None and not (differ == prompt_len - 1 or prompt_len - 1 <= first <= differ):
            raise ValueError(f"the base pass can run from {prompt_len - 1} … {differ}, not from {first}")
        first = differ if first is None or differ == prompt_len - 1 else first
        if first == prompt_len - 1:
            kv_before, prompt_tokens = self._prompt_kv(ids[:prompt_len])
        else:
            kv_before, prompt_tokens = [(k[:, :, :first], v[:, :, :first]) for k, v in previous.kv], 0
        tail = len(ids) - first
        # Logit rows prompt_len-1 … T-2 predict tokens prompt_len … T-1; this pass makes those from `first` on.
        while True:
            run = self.budget.attempt(
                lambda: self._chain(ids, first, kv_before, rows_from=first, whole=not splittable),
                min(tail, self.budget.token_budget) if self.budget.split_base else tail,
                "the base pass",
                cannot=None if splittable else "its attention recording must see the chain in one pass",
                base=True,
            )
            if run is not None:
                break
        kv, entropy, norm, logprobs, skip, passes = run
        reused = first - (prompt_len - 1)  # rows read from `previous`
        if reused:
            entropy = torch.cat([previous.entropy[:reused], entropy])
            norm = torch.cat([previous.norm[:reused], norm])
            logprobs = torch.cat([previous.logprobs[:reused], logprobs])
            skip = torch.cat([previous.skip[:reused], skip])
        scored = torch.where(torch.arange(prompt_len, len(ids), device=self.device) >= start, logprobs, 0.0)
        return BasePass(
            ids=ids,
            prompt_len=prompt_len,
            start=start,
            kv=kv,
            entropy=entropy,
            norm=norm,
            prefix=torch.cat([scored.new_zeros(1), scored.cumsum(0)]),
            logprobs=logprobs,
            skip=skip[:-1],
            tokens=tail + prompt_tokens,
            passes=passes,
        )

    # Suffix passes.

    @torch.inference_mode()
    def score_from(self, base: BasePass, candidates: torch.Tensor, horizon: int | None = None) -> Scores:
        """Scores of `candidates` over an existing base pass (its cost is not counted here).

        With `horizon` h, only the h tokens after x[q+1] are rerun and the rest keep their base
        log-probs: the lookahead score f_h(q), from f(q) at h = 0 to the exact score as h grows.
        """
        ids, candidates = base.ids, candidates.to(self.device)
        total = len(ids)
        deleted = base.prompt_len + candidates
        values = base.head(candidates)
        full = total - 2 - deleted
        if horizon is not None:
            cut = full.clamp(max=horizon)
            values = values + (base.prefix[-1] - base.prefix[candidates + 2 + cut])  # the later tokens, unchanged
            full = cut
        lengths = full.tolist()
        # Groups of rows padded to one width, laid out by the configured budget; a forward pass runs as
        # many rows of a group as the budget now in force allows. A back-off so changes only how many
        # rows share a pass, which leaves every score bit for bit the same; padding could change them.
        groups = self._groups(self._rows(lengths), self._packing_budget)
        tokens = passes = 0
        while groups:
            width, group = groups.pop(0)
            rows = group[: max(1, self.budget.token_budget // width)]
            alone = len(rows) == 1 and len(rows[0][0]) == 1 and rows[0][1] == width  # one unpadded suffix
            found = self.budget.attempt(
                lambda: self._suffixes(ids, deleted, rows, base.kv, base.start, width, horizon),
                len(rows) * width,
                "a pass of packed suffixes",
                cannot="a single suffix cannot be split" if alone else None,
                rows=len(rows) == 1,
            )
            if found is None:
                if len(rows) == 1:  # one row did not fit: re-pack its suffixes into rows of the new row_tokens
                    members = set(rows[0][0])
                    narrower = self._rows([n if i in members else 0 for i, n in enumerate(lengths)])
                    groups[:0] = self._groups(narrower, self.budget.token_budget) + (
                        [(width, group[1:])] if group[1:] else []
                    )
                else:
                    groups.insert(0, (width, group))
                continue
            values += found
            tokens += len(rows) * width
            passes += 1
            if len(group) > len(rows):
                groups.insert(0, (width, group[len(rows) :]))
        return Scores(values.cpu(), tokens=tokens, passes=passes, current=base.objective)

    def score(self, ids, prompt_len, n_reasoning, candidates, kept=None):
        base = self.base_pass(ids, prompt_len, n_reasoning)
        scores = self.score_from(base, candidates)
        return Scores(scores.values, scores.tokens + base.tokens, scores.passes + base.passes, current=base.objective)

    def _rows(self, lengths: list[int]) -> list[tuple[list[int], int]]:
        """Suffixes (of these lengths; 0: none) packed into rows of about `row_tokens`: (candidate indices,
        packed length), widest first.

        Suffixes go longest first onto the currently shortest row, so rows come out nearly equal
        and padding to the widest row wastes little.
        """
        items = sorted(((length, i) for i, length in enumerate(lengths) if length > 0), reverse=True)
        if not items:
            return []
        n_rows = max(1, math.ceil(sum(length for length, _ in items) / self.budget.row_tokens))
        heap = [(0, r, []) for r in range(n_rows)]
        for length, i in items:
            size, r, members = heapq.heappop(heap)
            members.append(i)
            heapq.heappush(heap, (size + length, r, members))
        return sorted(((members, size) for size, _, members in heap if members), key=lambda row: -row[1])

    @staticmethod
    def _groups(rows: list[tuple[list[int], int]], budget: int) -> list[tuple[int, list[tuple[list[int], int]]]]:
        """Rows (widest first) in consecutive groups of as many of the widest as fit in `budget` (at least
        one); each group with the width its rows are padded to: its widest."""
        if not rows:
            return []
        per_group = max(1, budget // rows[0][1])
        return [(rows[k][1], rows[k : k + per_group]) for k in range(0, len(rows), per_group)]

    def _suffixes(self, ids, deleted, layout, base_kv, start, width: int | None = None, horizon=None) -> torch.Tensor:
        """Sum of scored suffix log-probs for every candidate in `layout`, in one batched forward pass.

        Candidate q feeds x[q+1 : T-1] at positions q … T-3 to predict x[q+2 : T] (with `horizon` h,
        only the first h of them). Its queries see base cache columns c < q and, causally, their own
        suffix only. Rows are padded to `width` (default: the widest); padding sees one column and is
        never read.
        """
        total, device = len(ids), ids.device
        width = width or max(size for _, size in layout)
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
            if horizon is not None:
                lengths = lengths.clamp(max=horizon)
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
        key_positions = torch.cat([torch.arange(total, device=device).expand(len(layout), -1), positions], dim=1)
        logits = self.model(
            input_ids=inputs,
            position_ids=positions,
            attention_mask=block_masks(self.model, allowed, positions[:, :, None] - key_positions[:, None, :]),
            cache=self._cache(base_kv, len(layout)),
            logits_to_keep=keep,
        ).logits
        logprobs = target_logprobs(logits, targets[keep])
        return torch.zeros(len(deleted), dtype=torch.float64, device=device).index_add_(0, owner[keep], logprobs)
