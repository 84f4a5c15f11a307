"""Out-of-memory back-off in the packed scorer: injected CUDA OOMs shrink the budget, never the results."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import tiny_llama
from exact.budget import vocab_budget
from exact.greedy import greedy_prune
from exact.scorers import NaiveScorer, PackedScorer
from exact.sequence import Segments


def chain(seed: int, prompt_len: int = 9, n: int = 30, answer_len: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (prompt_len + n + answer_len,), generator=g), prompt_len, n


def inject_oom(
    monkeypatch, model, times: int = 1, above: int = 0, suffix: bool | None = None, skip: int = 0
) -> list[int]:
    """Make the model's forward passes over more than `above` tokens raise a CUDA OOM: `times` of
    them, after letting the first `skip` run.

    `suffix`: only packed suffix passes (they carry an attention mask), only passes over the chain
    (prompt, base, objective), or any. Returns the sizes of the passes that failed, as they fail.
    """
    forward, failed, seen = model.forward, [], []

    def failing(**kwargs):
        tokens = kwargs["input_ids"].numel()
        is_suffix = kwargs.get("attention_mask") is not None
        if len(failed) < times and tokens > above and suffix in (None, is_suffix):
            seen.append(tokens)
            if len(seen) <= skip:
                return forward(**kwargs)
            failed.append(tokens)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return forward(**kwargs)

    monkeypatch.setattr(model, "forward", failing)
    return failed


def identical(a: torch.Tensor, b: torch.Tensor, exact: bool) -> bool:
    return torch.equal(a, b) if exact else torch.allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_suffix_pass_oom_halves_the_budget_and_keeps_scores_identical(monkeypatch, caplog, attn):
    model = tiny_llama(attn=attn)
    reference = PackedScorer(model, "joint", token_budget=128, row_tokens=32)
    scorer = PackedScorer(model, "joint", token_budget=128, row_tokens=32)
    first, second = chain(0, n=20), chain(1, n=20)
    expected = [reference.score(ids, p, n, torch.arange(n)) for ids, p, n in (first, second)]

    failed = inject_oom(monkeypatch, model, times=1, above=64, suffix=True)
    with caplog.at_level(logging.WARNING, logger="exact.scorers"):
        got = scorer.score(*first, torch.arange(first[2]))
    assert len(failed) == 1 and failed[0] > 64
    # Fewer rows per pass: eager attention gives the same bits; sdpa's CPU kernel, run on a different
    # batch, may round differently (it is not batch-invariant across threads), by ~1e-6 nats.
    assert identical(got.values, expected[0].values, exact=attn == "eager")
    assert got.passes > expected[0].passes and got.current == expected[0].current
    assert scorer.budget.token_budget == 64 and scorer.budget.row_tokens == 32 and scorer.budget.backoffs == 1
    assert f"of {failed[0]} tokens ran out of memory; token_budget 128 → 64, row_tokens 32 → 32" in caplog.text
    assert scorer.settings() == {
        "scorer": "packed",
        "token_budget": 64,
        "row_tokens": 32,
        "split_base": False,
        "backoffs": 1,
    }
    assert reference.settings() == {"scorer": "packed"}

    # The smaller budget stays for the next step, which needs no further back-off.
    again = scorer.score(*second, torch.arange(second[2]))
    assert identical(again.values, expected[1].values, exact=attn == "eager")
    assert scorer.budget.token_budget == 64 and scorer.budget.backoffs == 1 and len(failed) == 1


def test_a_row_that_does_not_fit_is_repacked_narrower(monkeypatch, caplog):
    """A pass of one row that runs out of memory: row_tokens shrinks and the row's suffixes are re-packed."""
    model = tiny_llama()
    ids, p, n = chain(2, n=20)
    expected = PackedScorer(model, "joint", token_budget=64, row_tokens=64).score(ids, p, n, torch.arange(n))
    scorer = PackedScorer(model, "joint", token_budget=64, row_tokens=64, min_budget=8)
    failed = inject_oom(monkeypatch, model, times=1, above=40, suffix=True)
    with caplog.at_level(logging.WARNING, logger="exact.scorers"):
        got = scorer.score(ids, p, n, torch.arange(n))
    assert len(failed) == 1 and scorer.budget.backoffs == 1
    assert scorer.budget.token_budget == 32 and scorer.budget.row_tokens == 32
    assert "token_budget 64 → 32, row_tokens 64 → 32" in caplog.text
    # Re-packed suffixes sit elsewhere in their rows: the same scores up to fp32 rounding.
    assert torch.allclose(got.values, expected.values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_base_pass_oom_splits_the_base_pass(monkeypatch, caplog, objective):
    model = tiny_llama()
    ids, p, n = chain(3, n=16)
    reference = PackedScorer(model, objective, token_budget=128, row_tokens=32)
    expected = reference.score(ids, p, n, torch.arange(n))
    expected_j = reference.objective(ids, p, n)
    scorer = PackedScorer(model, objective, token_budget=128, row_tokens=32, min_budget=8)
    tail = len(ids) - p + 1  # the base pass: the chain after the cached prompt
    failed = inject_oom(monkeypatch, model, times=1, above=20, suffix=False)
    with caplog.at_level(logging.WARNING, logger="exact.scorers"):
        got = scorer.score(ids, p, n, torch.arange(n))
    assert failed == [tail] and scorer.budget.split_base and scorer.budget.backoffs == 1
    assert scorer.budget.token_budget == 16 < tail  # halved until the failed pass gets split
    assert f"the base pass of {tail} tokens ran out of memory; token_budget 128 → 16" in caplog.text
    assert "base pass split" in caplog.text
    assert got.passes > expected.passes and got.tokens == expected.tokens  # more passes, no extra work
    assert torch.allclose(got.values, expected.values, atol=1e-5, rtol=0)
    assert abs(got.current - expected.current) < 1e-5
    base = scorer.base_pass(ids, p, n)
    assert base.passes == 2 and len(base.entropy) == len(base.logprobs)  # split: the same per-row numbers

    # The objective pass over the whole chain, now in chunks of 16 tokens, backs off the same way.
    failed = inject_oom(monkeypatch, model, times=1, above=8, suffix=False)
    assert torch.allclose(scorer.objective(ids, p, n).values, expected_j.values, atol=1e-5, rtol=0)
    assert failed == [16] and scorer.budget.token_budget == 8 and scorer.budget.backoffs == 2


def test_split_base_pass_matches_one_pass():
    model = tiny_llama()
    ids, p, n = chain(4)
    one = PackedScorer(model, "joint", token_budget=64, row_tokens=16)
    split = PackedScorer(model, "joint", token_budget=16, row_tokens=16, split_base=True)
    a, b = one.base_pass(ids, p, n), split.base_pass(ids, p, n)
    assert b.passes == 3 and a.tokens == b.tokens
    assert torch.allclose(a.prefix, b.prefix, atol=1e-5, rtol=0) and torch.allclose(a.skip, b.skip, atol=1e-5, rtol=0)
    assert torch.allclose(a.entropy, b.entropy, atol=1e-5, rtol=0)
    assert split.settings()["split_base"] is True
    # What the scorer and the surrogate's features read from the logits, kept per row instead of them.
    rows = torch.arange(n)
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, p - 1 : p - 1 + n].double()
    logp = torch.log_softmax(logits, -1)
    assert torch.allclose(a.logprobs[rows], logp[rows, ids[p + rows]], atol=1e-5)
    assert torch.allclose(a.skip[rows], logp[rows, ids[p + rows + 1]], atol=1e-5)
    assert torch.allclose(a.entropy[rows].double(), -(logp.exp() * logp).sum(-1), atol=1e-5)


def test_oom_below_the_floor_raises_a_clear_error(monkeypatch):
    model = tiny_llama()
    ids, p, n = chain(5)
    failed = inject_oom(monkeypatch, model, times=10**6, suffix=True)  # every suffix pass runs out of memory
    scorer = PackedScorer(model, "joint", token_budget=128, row_tokens=32, min_budget=100)
    with pytest.raises(
        torch.OutOfMemoryError, match=r"at token_budget=128, row_tokens=32 after 0 back-off.*min_budget=100"
    ):
        scorer.score(ids, p, n, torch.arange(n))
    assert scorer.budget.token_budget == 128 and scorer.budget.backoffs == 0 and len(failed) == 1

    # Without a floor in the way it halves on, until a single suffix does not fit.
    scorer = PackedScorer(model, "joint", token_budget=128, row_tokens=32, min_budget=1)
    with pytest.raises(torch.OutOfMemoryError, match="at token_budget=64, .* a single suffix cannot be split"):
        scorer.score(ids, p, n, torch.arange(n))
    assert scorer.budget.backoffs == 1 and len(failed) == 3


def test_a_base_pass_that_must_run_whole_is_not_split(monkeypatch):
    """The hybrid's attention recording must see the chain in one pass: it asks for `splittable=False`."""
    model = tiny_llama()
    ids, p, n = chain(6)
    scorer = PackedScorer(model, "joint", token_budget=128, row_tokens=32)
    inject_oom(monkeypatch, model, times=1, above=20, suffix=False)
    with pytest.raises(torch.OutOfMemoryError, match="attention recording must see the chain in one pass"):
        scorer.base_pass(ids, p, n, splittable=False)
    assert not scorer.budget.split_base and scorer.budget.backoffs == 0


def test_greedy_with_injected_ooms_deletes_in_the_same_order(monkeypatch):
    model = tiny_llama()
    g = torch.Generator().manual_seed(7)
    segments = Segments(
        prompt=torch.randint(0, 128, (6,), generator=g),
        reasoning=torch.randint(0, 128, (10,), generator=g),
        answer=torch.randint(0, 128, (4,), generator=g),
    )
    expected = greedy_prune(PackedScorer(model, "joint", token_budget=96, row_tokens=24), segments, 5)
    scorer = PackedScorer(model, "joint", token_budget=96, row_tokens=24, min_budget=8)
    suffix_failed = inject_oom(monkeypatch, model, times=2, above=40, suffix=True)  # in the first steps
    got = greedy_prune(scorer, segments, 2)
    # Then a base pass (after the objective pass greedy starts with; the prompt pass is cached).
    base_failed = inject_oom(monkeypatch, model, times=1, above=12, suffix=False, skip=1)
    rest = greedy_prune(scorer, segments, 5)
    assert len(suffix_failed) == 2 and base_failed == [len(segments.reasoning) + len(segments.answer) + 1]
    assert scorer.budget.backoffs == 3 and scorer.budget.split_base
    assert got.deletion_order == expected.deletion_order[:2]
    assert rest.deletion_order == expected.deletion_order
    assert all(abs(a - b) < 1e-5 for a, b in zip(rest.step_objective, expected.step_objective))


def test_the_default_budget_follows_the_vocabulary():
    """Logits dominate a pass: `auto` gives the power of two of tokens whose fp32 logits fit in 256 MiB."""
    model = tiny_llama()
    for vocab, tokens in ((49152, 1024), (262144, 256), (128, 524288)):
        model.config.vocab_size = vocab
        assert vocab_budget(model) == tokens
    model.config.vocab_size = 262144
    assert PackedScorer(model).budget.token_budget == 256 and NaiveScorer(model).token_budget == 512
    assert PackedScorer(model, token_budget=100).budget.token_budget == 100
    with pytest.raises(ValueError, match="token_budget must be a positive number of tokens or 'auto'"):
        PackedScorer(model, token_budget="big")
