"""Per-token importance of the reasoning under the pruner LM, from one teacher-forced forward pass.

- `h2o_scores`: H2O's heavy-hitter score. The attention each reasoning token receives from all later
  positions (the rest of the reasoning and the answer), SUMMED over those query positions, over
  layers and over heads, without normalisation, as H2O accumulates it; early tokens collect more.
- `surprisal_scores`: −log p(token | prefix). Low-surprisal tokens are deleted first.
- `uniform_scores`: a seeded random ranking, reproducible per record id.
"""

from __future__ import annotations

import random

import torch

from exact.scorers import target_logprobs
from exact.sequence import Segments
from surrogate.features import recording_received_attention


def _reasoning_rows(segments: Segments, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The full sequence, and the positions of its reasoning tokens."""
    ids = segments.with_kept(torch.arange(len(segments.reasoning))).to(device)
    start = len(segments.prompt)
    return ids, torch.arange(start, start + len(segments.reasoning), device=device)


@torch.inference_mode()
def h2o_scores(model, segments: Segments) -> torch.Tensor:
    """Total attention received from later positions, summed over layers and heads (the pass runs eager)."""
    device = next(model.parameters()).device
    ids, positions = _reasoning_rows(segments, device)
    later = (len(ids) - 1 - positions).clamp(min=1).float()
    with recording_received_attention(model) as store:
        model(input_ids=ids[None], logits_to_keep=1)
    received = store["received"]
    mean_received = sum(received[layer][0].sum(0) for layer in received)  # (T,), summed over layers and heads
    return (mean_received[positions] * later).cpu()


@torch.inference_mode()
def surprisal_scores(model, segments: Segments) -> torch.Tensor:
    """−log p of each reasoning token given everything before it."""
    device = next(model.parameters()).device
    ids, positions = _reasoning_rows(segments, device)
    logits = model(input_ids=ids[None], logits_to_keep=positions - 1).logits[0]
    return (-target_logprobs(logits, ids[positions])).float().cpu()


def uniform_scores(n: int, seed: int, record_id: str) -> torch.Tensor:
    """A random permutation of n, the same for the same (seed, record id) in every run and worker."""
    order = list(range(n))
    random.Random(f"{seed}:{record_id}").shuffle(order)
    scores = torch.empty(n)
    scores[order] = torch.arange(n, dtype=torch.float)
    return scores
