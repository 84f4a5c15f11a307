"""Surrogate features of the reasoning tokens of a chain, computed on the current, already pruned chain.

- `attention` (the paper's set): for each token, the mean attention it receives from every later
  position, one number per layer × head (DESIGN.md §4). Forward hooks reduce each layer's attention
  map to its column means as soon as the layer has run, so the T×T maps of all layers are never
  held at once. The model must use eager attention (sdpa returns no weights).
- `attention+surprisal`: the same, plus the token's surprisal −log p(token | prefix) and its
  relative position in the chain. Always reported next to attention-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from exact.scorers import BasePass, target_logprobs

FEATURE_SETS = ("attention", "attention+surprisal")


@dataclass
class ChainFeatures:
    """Raw features of some reasoning tokens: attention (m, L·H), surprisal (m,), relative position (m,)."""

    attention: torch.Tensor
    surprisal: torch.Tensor
    position: torch.Tensor


def feature_matrix(features: ChainFeatures, feature_set: str) -> torch.Tensor:
    """The surrogate's input (m, F): log attention means, with surprisal and position when asked."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; expected one of {FEATURE_SETS}")
    attention = features.attention.float().clamp(min=1e-6).log()
    if feature_set == "attention":
        return attention
    return torch.cat([attention, features.surprisal.float()[:, None], features.position.float()[:, None]], dim=1)


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention modules, in layer order (modules that carry a `layer_idx` and an `o_proj`)."""
    found = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "o_proj")]
    if not found:
        raise ValueError(f"no attention layers found in {type(model).__name__}")
    return sorted(found, key=lambda m: m.layer_idx)


def received_from_later(weights: torch.Tensor) -> torch.Tensor:
    """(…, queries, keys) causal attention -> (…, keys): mean weight each key gets from the positions after it.

    The queries are the last positions of the keys (a pass over a cached prefix); the result holds
    for the keys at or after the first query, whose later positions are all queries.
    """
    weights = weights.float()
    queries, keys = weights.shape[-2:]
    offset = keys - queries
    own = torch.zeros_like(weights[..., 0, :])
    own[..., offset:] = weights.diagonal(offset=offset, dim1=-2, dim2=-1)
    count = (keys - 1 - torch.arange(keys, device=weights.device)).clamp(min=1)
    return (weights.sum(-2) - own) / count


@contextmanager
def recording_received_attention(model) -> Iterator[dict[int, torch.Tensor]]:
    """Inside the block, each forward pass stores {layer: (batch, heads, T) received-attention means}."""
    store: dict[int, torch.Tensor] = {}

    def hook(module, args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError("attention weights are not available: load the model with attn_implementation=eager")
        store[module.layer_idx] = received_from_later(weights)

    handles = [m.register_forward_hook(hook) for m in attention_modules(model)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def stack_features(store: dict[int, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """(len(positions), layers · heads) features of the given sequence positions, batch row 0."""
    per_layer = torch.stack([store[layer][0][:, positions] for layer in sorted(store)])  # (L, H, n)
    return per_layer.permute(2, 0, 1).reshape(len(positions), -1).cpu()


@torch.inference_mode()
def reasoning_features(model, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> ChainFeatures:
    """Features of all reasoning tokens of one chain, from one forward pass."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    rows = torch.arange(prompt_len - 1, prompt_len + n_reasoning - 1, device=device)
    with recording_received_attention(model) as store:
        logits = model(input_ids=ids[None], logits_to_keep=rows).logits[0]
    return ChainFeatures(
        attention=stack_features(store, rows + 1),
        surprisal=-target_logprobs(logits, ids[rows + 1]).float().cpu(),
        position=torch.arange(n_reasoning) / max(n_reasoning - 1, 1),
    )


def candidate_features(
    store: dict[int, torch.Tensor], base: BasePass, n_reasoning: int, candidates: torch.Tensor
) -> ChainFeatures:
    """Features of `candidates` (reasoning positions) from a recorded packed-scorer base pass."""
    positions = base.prompt_len + candidates
    surprisal = -(base.logits[candidates, base.ids[positions]].double() - base.norm[candidates])
    return ChainFeatures(
        attention=stack_features(store, positions),
        surprisal=surprisal.float().cpu(),
        position=candidates.cpu() / max(n_reasoning - 1, 1),
    )
