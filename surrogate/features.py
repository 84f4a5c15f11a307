"""Attention features: for each reasoning token, the mean attention it receives from every later position.

One number per layer × head (DESIGN.md §4), computed on the current, already pruned chain. Forward
hooks reduce each layer's attention map to its column means as soon as the layer has run, so the
T×T maps of all layers are never held at once. The model must use eager attention (sdpa returns no
weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention modules, in layer order (modules that carry a `layer_idx` and an `o_proj`)."""
    found = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "o_proj")]
    if not found:
        raise ValueError(f"no attention layers found in {type(model).__name__}")
    return sorted(found, key=lambda m: m.layer_idx)


def received_from_later(weights: torch.Tensor) -> torch.Tensor:
    """(…, queries T, keys T) causal attention -> (…, T): mean weight each key gets from the queries after it."""
    size = weights.shape[-1]
    later = weights.float().sum(-2) - weights.float().diagonal(dim1=-2, dim2=-1)
    count = (size - 1 - torch.arange(size, device=weights.device)).clamp(min=1)
    return later / count


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
def reasoning_features(model, ids: torch.Tensor, prompt_len: int, n_reasoning: int) -> torch.Tensor:
    """(n_reasoning, layers · heads) features of the reasoning tokens of one chain."""
    device = next(model.parameters()).device
    with recording_received_attention(model) as store:
        model(input_ids=ids[None].to(device), logits_to_keep=1)
    return stack_features(store, torch.arange(prompt_len, prompt_len + n_reasoning, device=device))
