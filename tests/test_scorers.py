"""The packed scorer equals the naive one (and a plain full recompute) on random deletions."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_gemma3, tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2
from exact.scorers import NaiveScorer, PackedScorer, scored_from, target_logprobs


def full_recompute(model, ids: torch.Tensor, start: int) -> float:
    """Σ log p(x_t | x_<t) for t ≥ start, from one unbatched forward pass: the definition."""
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0]
    return float(target_logprobs(logits[start - 1 : -1], ids[start:]).double().sum())


def random_chain(seed: int, prompt_len: int = 9, n: int = 30, answer_len: int = 6, vocab: int = 128):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (prompt_len + n + answer_len,), generator=g), prompt_len, n


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_packed_equals_naive_on_random_deletions(build, attn, objective):
    model = build(attn=attn)
    for seed in range(3):
        ids, prompt_len, n = random_chain(seed)
        g = torch.Generator().manual_seed(100 + seed)
        candidates = torch.sort(torch.randperm(n, generator=g)[:12])[0]
        naive = NaiveScorer(model, objective, token_budget=3 * len(ids)).score(ids, prompt_len, n, candidates)
        packed = PackedScorer(model, objective, token_budget=60, row_tokens=20).score(ids, prompt_len, n, candidates)
        assert torch.allclose(naive.values, packed.values, atol=1e-4, rtol=0)
        assert packed.tokens < naive.tokens


@pytest.mark.parametrize("build", [tiny_gemma3, tiny_mistral], ids=["gemma3", "mistral"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_packed_equals_naive_past_a_sliding_window(build, attn, objective):
    """Chains of 55 tokens through layers that see 16: the packed mask drops keys beyond each layer's window
    (Gemma 3: sliding layers and a full one; Mistral: every layer), as the model's own masks do."""
    model = build(attn=attn, window=16)
    ids, prompt_len, n = random_chain(5, n=40)
    candidates = torch.arange(n)
    naive = NaiveScorer(model, objective, token_budget=4 * len(ids)).score(ids, prompt_len, n, candidates)
    packed = PackedScorer(model, objective, token_budget=60, row_tokens=20).score(ids, prompt_len, n, candidates)
    assert torch.allclose(naive.values, packed.values, atol=1e-4, rtol=0)
    wide = build(attn=attn, window=1000)  # the same weights, no window reached: the windows change the scores
    unwindowed = NaiveScorer(wide, objective, token_budget=4 * len(ids)).score(ids, prompt_len, n, candidates)
    assert (unwindowed.values - naive.values).abs().max() > 1e-2


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_scores_are_the_definition(objective):
    """Every candidate's score is the objective of the chain without that token, computed from scratch."""
    model = tiny_llama()
    ids, prompt_len, n = random_chain(7, n=12)
    candidates = torch.arange(n)
    packed = PackedScorer(model, objective, token_budget=25, row_tokens=10).score(ids, prompt_len, n, candidates)
    for j in range(n):
        shorter = torch.cat([ids[: prompt_len + j], ids[prompt_len + j + 1 :]])
        expected = full_recompute(model, shorter, scored_from(objective, prompt_len, n - 1))
        assert abs(float(packed.values[j]) - expected) < 1e-4


def test_objective_matches_full_recompute():
    model = tiny_llama()
    ids, prompt_len, n = random_chain(3)
    for objective in ("joint", "answer"):
        value = NaiveScorer(model, objective).objective(ids, prompt_len, n).values[0]
        assert abs(float(value) - full_recompute(model, ids, scored_from(objective, prompt_len, n))) < 1e-4


def test_packing_layout_does_not_change_scores():
    """One suffix per pass, several padded rows per pass, or everything in one row: the same scores."""
    model = tiny_llama()
    ids, prompt_len, n = random_chain(11)
    candidates = torch.arange(n)
    layouts = [(1, 1), (17, 70), (10_000, 10_000)]
    results = [PackedScorer(model, "joint", b, r).score(ids, prompt_len, n, candidates) for r, b in layouts]
    assert results[0].passes == n + 1 and results[1].passes > 2 and results[2].passes == 2
    for other in results[1:]:
        assert torch.allclose(results[0].values, other.values, atol=1e-5, rtol=0)


def test_last_token_and_empty_suffix():
    """Deleting the last reasoning token before a one-token answer needs no suffix pass."""
    model = tiny_llama()
    ids, prompt_len, n = random_chain(5, n=4, answer_len=1)
    candidates = torch.arange(n)
    for objective in ("joint", "answer"):
        naive = NaiveScorer(model, objective).score(ids, prompt_len, n, candidates)
        packed = PackedScorer(model, objective).score(ids, prompt_len, n, candidates)
        assert torch.allclose(naive.values, packed.values, atol=1e-4, rtol=0)


def test_unknown_objective_is_named():
    with pytest.raises(ValueError, match="unknown objective 'both'"):
        PackedScorer(tiny_llama(), objective="both")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_equals_naive_on_cuda():
    model = tiny_llama().cuda()
    ids, prompt_len, n = random_chain(2)
    candidates = torch.arange(n)
    naive = NaiveScorer(model, "joint").score(ids, prompt_len, n, candidates)
    packed = PackedScorer(model, "joint", token_budget=64).score(ids, prompt_len, n, candidates)
    assert torch.allclose(naive.values, packed.values, atol=1e-4, rtol=0)


def test_cached_prompt_is_reused_only_for_the_same_prompt():
    model = tiny_llama()
    first, second = random_chain(21), random_chain(22)
    scorer = PackedScorer(model, "joint", token_budget=64, row_tokens=32)
    for ids, prompt_len, n in (first, second, first):
        candidates = torch.arange(n)
        reused = scorer.score(ids, prompt_len, n, candidates)
        fresh = PackedScorer(model, "joint", token_budget=64, row_tokens=32).score(ids, prompt_len, n, candidates)
        assert torch.allclose(reused.values, fresh.values, atol=1e-5, rtol=0)
    again = scorer.score(*first, torch.arange(first[2]))
    assert again.tokens == reused.tokens - (first[1] - 1)  # the prompt pass is paid once per prompt


def deleted(ids: torch.Tensor, position: int) -> torch.Tensor:
    return torch.cat([ids[:position], ids[position + 1 :]])


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_gemma3], ids=["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_base_pass_reruns_only_from_the_last_deletion(build, objective):
    model = build()  # Gemma 3: chains of 45 tokens through sliding windows of 16
    ids, prompt_len, n = random_chain(31)
    scorer = PackedScorer(model, objective)
    base = scorer.base_pass(ids, prompt_len, n)
    for j in (17, 0, 1, 25, 9):  # successive deletions, each pass over the one before
        ids, n = deleted(ids, prompt_len + j), n - 1
        base = scorer.base_pass(ids, prompt_len, n, previous=base)
        fresh = PackedScorer(model, objective).base_pass(ids, prompt_len, n)
        for field in ("entropy", "norm", "logprobs", "skip", "prefix"):
            assert torch.allclose(getattr(base, field), getattr(fresh, field), atol=1e-5, rtol=0), field
        for (keys, values), (fresh_keys, fresh_values) in zip(base.kv, fresh.kv):
            assert torch.allclose(keys, fresh_keys, atol=1e-5) and torch.allclose(values, fresh_values, atol=1e-5)
        assert base.tokens <= len(ids) - max(prompt_len - 1, prompt_len + j - 2)
    other, other_prompt, other_n = random_chain(32)
    assert scorer.base_pass(other, other_prompt, other_n, previous=base).tokens == len(other)  # another prompt: all
