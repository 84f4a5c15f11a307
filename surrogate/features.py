"""Surrogate features of deletion candidates, read off the base pass over the current, already pruned chain.

A feature set is a `+`-joined list of named blocks (docs/SURROGATE.md), for candidate token x_q:

- `attention` (the paper's set): the log mean attention x_q receives from every later position,
  one number per layer × head. Forward hooks reduce each layer's attention map to its column means
  as soon as the layer has run. Only the base pass records them, with eager attention (sdpa returns
  no weights); an incremental base pass, which reruns the chain from just before the last deletion,
  adds to the last pass's running totals by query row (`received_sums`), kept at `CHECKPOINTS`
  query rows a layer so that they grow linearly with the chain (`resume_at`).
- `next_attention`: the same for x_{q+1}, the token whose context the deletion changes first.
- `answer_attention`: the log mean attention x_q receives from the answer segment's tokens, per
  layer × head: how much the answer, most of what a deletion can cost, reads the token.
- `first_order`: the base pass's own terms of the deletion: −log p(x_q), log p(x_{q+1}), the skip
  log-prob log p(x_{q+1} | x_<q), the entropies of the rows that predict x_q and x_{q+1}, and f(q) − J.
- `surprisal`: −log p(x_q) alone.
- `position`: the relative position in the chain, and log(1 + tokens after x_q).
- `token_class`: a one-hot coarse class of the token's text (`TOKEN_CLASSES`).

Every candidate also gets its prior, the score a residual surrogate corrects: the first-order score
f(q) (`BasePass.first_order`), or the lookahead score f_h(q) (`PackedScorer.score_from(horizon=h)`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from exact.scorers import BasePass

BLOCKS = ("attention", "next_attention", "answer_attention", "first_order", "surprisal", "position", "token_class")
TOKEN_CLASSES = ("digit", "operator", "punctuation", "newline", "word", "piece", "other")
_WIDTHS = {"first_order": 6, "surprisal": 1, "position": 2, "token_class": len(TOKEN_CLASSES)}


def feature_blocks(feature_set: str) -> tuple[str, ...]:
    """The blocks of a feature set name such as `attention+first_order` (the empty name has none)."""
    blocks = tuple(feature_set.split("+")) if feature_set else ()
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown or len(set(blocks)) != len(blocks):
        raise ValueError(f"bad feature set {feature_set!r}: join distinct blocks of {BLOCKS} with '+'")
    return blocks


def feature_width(feature_set: str, layers: int, heads: int) -> int:
    """How many numbers a candidate's feature row has, for a model of `layers` × `heads` attention heads."""
    return sum(layers * heads if "attention" in b else _WIDTHS[b] for b in feature_blocks(feature_set))


def prior_column(feature_set: str, n_features: int) -> int | None:
    """Where `feature_matrix` puts f_h − J (the `first_order` block's last term) in a row of `n_features`
    numbers; None when the set has no `first_order` block."""
    blocks = feature_blocks(feature_set)
    if "first_order" not in blocks:
        return None
    attention = [b for b in blocks if "attention" in b]
    per_head_block = (n_features - sum(_WIDTHS[b] for b in blocks if "attention" not in b)) // max(len(attention), 1)
    column = 0
    for block in blocks[: blocks.index("first_order")]:
        column += per_head_block if "attention" in block else _WIDTHS[block]
    return column + _WIDTHS["first_order"] - 1


def feature_matrix(raw: dict[str, torch.Tensor], feature_set: str) -> torch.Tensor:
    """The surrogate's input (m, F) from raw candidate features: log attention means, the other blocks as they are."""
    columns = []
    for block in feature_blocks(feature_set):
        value = raw[block]
        if "attention" in block:
            value = value.float().clamp(min=1e-6).log()
        elif block == "token_class":
            value = torch.nn.functional.one_hot(value.long(), len(TOKEN_CLASSES))
        columns.append(value.float().reshape(len(value), -1))
    if not columns:
        return torch.zeros(len(raw["prior"]), 0)
    return torch.cat(columns, dim=1)


def token_class_table(tokenizer) -> torch.Tensor:
    """The coarse class (index into TOKEN_CLASSES) of every token id of `tokenizer`."""
    table = torch.empty(len(tokenizer), dtype=torch.long)
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        stripped = text.strip()
        if "\n" in text:
            kind = "newline"
        elif any(c.isdigit() for c in stripped):
            kind = "digit"
        elif stripped and all(c in "+-*/=×÷^%$<>()" for c in stripped):
            kind = "operator"
        elif stripped and all(not c.isalnum() for c in stripped):
            kind = "punctuation"
        elif stripped.isalpha():
            kind = "word" if text[:1].isspace() else "piece"
        else:
            kind = "other"
        table[token_id] = TOKEN_CLASSES.index(kind)
    return table


ATTENTION_LAYOUTS = "Llama/Qwen2/Mistral/Gemma-style (`o_proj`) or GPT-2-style (`c_attn`, `c_proj`)"
CHECKPOINTS = 32  # query rows of running totals a recording keeps a layer, evenly spaced


def _is_self_attention(module: torch.nn.Module) -> bool:
    """A self-attention module of a supported layout: it has a `layer_idx`, and under eager attention its
    forward returns (output, weights (batch, heads, queries, keys))."""
    if not hasattr(module, "layer_idx"):
        return False
    if hasattr(module, "o_proj"):  # Llama, Qwen2, Mistral, Gemma, ...
        return True
    gpt2 = hasattr(module, "c_attn") and hasattr(module, "c_proj")
    return gpt2 and not getattr(module, "is_cross_attention", False)


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention modules, in layer order; ValueError naming the model class for other layouts."""
    found = [m for m in model.modules() if _is_self_attention(m)]
    if not found:
        raise ValueError(
            f"cannot read the attention of {type(model).__name__}: no self-attention layers of a supported "
            f"layout ({ATTENTION_LAYOUTS}); use a feature set without attention blocks "
            f"(surrogate.feature_set=first_order+position+token_class) or the model-free scorer.surrogate=first_order@4"
        )
    return sorted(found, key=lambda m: m.layer_idx)


def received_sums(weights: torch.Tensor, keys_from: int, before: torch.Tensor | None = None) -> torch.Tensor:
    """Running totals of the attention each key from `keys_from` on receives from the positions after it.

    `weights` (heads, queries, T) is one pass's causal attention, its queries the last positions. Row i
    of the result (heads, rows, T - keys_from) holds, for each key, the weight it gets from the queries up
    to the pass's i-th query at or after keys_from, its own left out (queries before keys_from see none of
    these keys); the last row is the total. A pass whose first query, at position `first`, comes after
    keys_from (an incremental base pass) starts from `before` (heads, first - keys_from): the totals at
    `first` of an earlier pass over the same tokens up to there.
    """
    heads, queries, total = weights.shape
    first = total - queries
    skipped = max(keys_from - first, 0)  # queries before keys_from see none of these keys
    weights = weights[:, skipped:, keys_from:].float()
    query = torch.arange(first + skipped, total, device=weights.device)
    key = torch.arange(keys_from, total, device=weights.device)
    sums = weights.masked_fill(query[:, None] == key[None, :], 0.0).cumsum(1)
    if first <= keys_from:
        return sums
    if before is None:
        raise ValueError(
            f"this pass starts at position {first}: it needs the running totals of an earlier pass over the "
            f"same tokens up to there (`resume_at` gives a position that has them)"
        )
    return sums + torch.nn.functional.pad(before, (0, total - first))[:, None]


def checkpoints(sums: torch.Tensor, first: int, keys_from: int) -> dict[int, torch.Tensor]:
    """Rows of `received_sums` kept for later passes, by the position p a pass can start from: the totals
    of the queries before p, over keys keys_from … p-1. Every `stride`-th such position is kept, with the
    stride making about `CHECKPOINTS` over the chain (the next pass, over a shorter chain, starts before
    its end)."""
    total = keys_from + sums.shape[-1]
    stride = max(1, -(-(total - keys_from) // CHECKPOINTS))
    start = max(first, keys_from)  # row i holds the totals at position start + i + 1
    kept = [p for p in range(start + 1, total) if (p - keys_from) % stride == 0]
    return {p: sums[:, p - start - 1, : p - keys_from].clone() for p in kept}


def resume_at(store: dict | None, first: int, keys_from: int) -> int:
    """The position at or before `first` from which a pass can continue the running totals recorded in
    `store` (with keys from `keys_from`): the latest checkpoint, or `first` itself when no totals are needed."""
    if store is None or first <= keys_from:
        return first
    kept = next(iter(store["sums"].values()), {})
    return max([keys_from, *(p for p in kept if p <= first)])


@contextmanager
def attention_implementation(model, name: str) -> Iterator[None]:
    """Run the block with the model's attention switched to `name` (e.g. eager, to read weights)."""
    before = model.config._attn_implementation
    if before != name:
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        if before != name:
            model.set_attn_implementation(before)


@contextmanager
def recording_received_attention(
    model, tail: int = 0, keys_from: int | None = None, previous: dict | None = None
) -> Iterator[dict[str, dict[int, torch.Tensor]]]:
    """Inside the block, each forward pass (eager attention) stores per layer the (batch 1, heads, T) means of the
    attention each position receives: from every later position (`received`), and from the pass's last `tail`
    queries (`answer`: the answer segment's tokens), both reduced as the layer runs.

    `received` holds for the keys from `keys_from` on (default: those from the pass's first query; 0 before).
    With `keys_from`, the store also keeps each layer's running totals at some positions (`sums`,
    `checkpoints`), so that the next pass over the same tokens can start from one of them (`resume_at`):
    that pass records with this store as `previous`. They take about `CHECKPOINTS` / 2 × heads × T numbers
    a layer, over the keys from `keys_from`. The pass must run in one piece."""
    store: dict[str, dict[int, torch.Tensor]] = {"received": {}, "answer": {}, "sums": {}}
    earlier = (previous or {}).get("sums", {})

    def hook(module, args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError("attention weights are not available: run the pass with eager attention")
        layer = module.layer_idx
        total = weights.shape[-1]
        first_key = keys_from if keys_from is not None else total - weights.shape[-2]
        if total <= first_key:  # a pass that ends before the keys (the prompt's own pass) tells nothing of them
            return
        first = total - weights.shape[-2]
        before = earlier.get(layer, {})
        sums = received_sums(weights[0], first_key, before.get(first))
        later = (total - 1 - torch.arange(first_key, total, device=sums.device)).clamp(min=1)
        received = torch.nn.functional.pad(sums[:, -1] / later, (first_key, 0))
        store["received"][layer] = received[None]
        if keys_from is not None:  # the totals a later pass can start from: the earlier ones still valid, and new
            carried = {p: row for p, row in before.items() if p <= first}
            store["sums"][layer] = {**carried, **checkpoints(sums, first, first_key)}
        if tail:
            store["answer"][layer] = weights[..., -tail:, :].float().mean(-2)

    handles = [m.register_forward_hook(hook) for m in attention_modules(model)]
    with attention_implementation(model, "eager"):
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()


def stack_attention(store: dict[int, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """(len(positions), layers · heads) received attention of the given sequence positions, batch row 0."""
    per_layer = torch.stack([store[layer][0][:, positions] for layer in sorted(store)])  # (L, H, n)
    return per_layer.permute(2, 0, 1).reshape(len(positions), -1).cpu()


def candidate_features(
    store: dict[str, dict[int, torch.Tensor]],
    base: BasePass,
    n_reasoning: int,
    candidates: torch.Tensor,
    blocks: tuple[str, ...] = BLOCKS,
    classes: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Raw features of `candidates` (reasoning indices) from a base pass recorded with attention on
    (`recording_received_attention`, with `tail` the answer's length when `answer_attention` is asked for).

    Returns each block in `blocks` (on the CPU) plus `prior`: the given scores (a lookahead f_h), or
    the first-order scores f, float64. Rows of `base.entropy`, `logprobs` and `skip` are indexed by
    reasoning index: row j predicts x_q.
    """
    j = candidates.to(base.prefix.device)
    positions = base.prompt_len + j
    prior = base.first_order(j) if prior is None else prior.to(j.device).double()
    raw = {"prior": prior.cpu()}
    if "attention" in blocks:
        raw["attention"] = stack_attention(store["received"], positions)
    if "next_attention" in blocks:
        raw["next_attention"] = stack_attention(store["received"], positions + 1)
    if "answer_attention" in blocks:
        raw["answer_attention"] = stack_attention(store["answer"], positions)
    if "surprisal" in blocks:
        raw["surprisal"] = -base.logprobs[j].float().cpu()
    if "first_order" in blocks:
        entropy_q, entropy_next = base.entropy[j], base.entropy[j + 1]
        terms = (-base.logprobs[j], base.logprobs[j + 1], base.skip[j], entropy_q, entropy_next, prior - base.objective)
        raw["first_order"] = torch.stack([t.float() for t in terms], dim=1).cpu()
    if "position" in blocks:
        after = len(base.ids) - 1 - positions
        raw["position"] = torch.stack([j.float() / max(n_reasoning - 1, 1), after.float().log1p()], dim=1).cpu()
    if "token_class" in blocks:
        if classes is None:
            raise ValueError("token_class features need the tokenizer's class table (token_class_table)")
        raw["token_class"] = classes[base.ids[positions].cpu()]
    return raw
