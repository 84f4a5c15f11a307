"""Greedy pruning equals a brute-force reference, and ties go to the lowest index."""

from __future__ import annotations

import pytest
import torch
from test_scorers import full_recompute

from conftest import tiny_gemma3, tiny_llama
from exact.greedy import ExactChecks, check_regrets, distinct_candidates, greedy_prune
from exact.scorers import NaiveScorer, PackedScorer, Scorer, Scores
from exact.sequence import Segments

SCORERS = {"naive": NaiveScorer, "packed": PackedScorer}


def brute_force_greedy(model, segments: Segments, deletions: int, objective: str) -> list[int]:
    """Alg. 1 written out: score every kept token by recomputing the whole shortened chain."""
    kept, order = list(range(len(segments.reasoning))), []
    prompt_len = len(segments.prompt)
    for _ in range(deletions):
        best, best_score = None, None
        for i in kept:
            rest = torch.tensor([k for k in kept if k != i], dtype=torch.long)
            start = prompt_len + (0 if objective == "joint" else len(rest))
            score = full_recompute(model, segments.with_kept(rest), start)
            if best_score is None or score > best_score + 1e-9:
                best, best_score = i, score
        order.append(best)
        kept.remove(best)
    return order


def segments(seed: int, n: int = 10) -> Segments:
    g = torch.Generator().manual_seed(seed)
    return Segments(
        prompt=torch.randint(0, 128, (6,), generator=g),
        reasoning=torch.randint(0, 128, (n,), generator=g),
        answer=torch.randint(0, 128, (4,), generator=g),
    )


@pytest.mark.parametrize("scorer", ["naive", "packed"])
@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_greedy_equals_brute_force(scorer, objective):
    model = tiny_llama()
    for seed in range(2):
        seg = segments(seed)
        trace = greedy_prune(SCORERS[scorer](model, objective, token_budget=32), seg, deletions=7)
        assert trace.deletion_order == brute_force_greedy(model, seg, 7, objective)
        assert len(trace.step_objective) == 8


def test_packed_greedy_follows_naive_past_a_sliding_window():
    """Gemma 3 with windows of 16 on chains of 40 tokens: packed and naive greedy delete in the same order."""
    model = tiny_gemma3(window=16)
    seg = segments(3, n=30)
    orders = [greedy_prune(SCORERS[name](model, "joint"), seg, deletions=12).deletion_order for name in SCORERS]
    assert orders[0] == orders[1]


class ConstantScorer(Scorer):
    """Every candidate scores the same: greedy must then always delete the lowest kept index."""

    name = "constant"

    def objective(self, ids, prompt_len, n_reasoning):
        return Scores(torch.zeros(1, dtype=torch.float64), tokens=0, passes=0)

    def score(self, ids, prompt_len, n_reasoning, candidates, kept=None):
        return Scores(torch.zeros(len(candidates), dtype=torch.float64), tokens=0, passes=0)


def test_ties_go_to_the_lowest_index():
    trace = greedy_prune(ConstantScorer(model=None), segments(0, n=6), deletions=6)
    assert trace.deletion_order == [0, 1, 2, 3, 4, 5]


def test_identical_neighbours_share_one_exact_score():
    tokens = torch.tensor([5, 5, 5, 7, 8, 8, 5])
    candidates, same_as = distinct_candidates(tokens)
    assert candidates.tolist() == [0, 3, 4, 6]
    assert same_as.tolist() == [0, 0, 0, 1, 2, 2, 3]

    model = tiny_llama()
    seg = Segments(torch.tensor([1, 2, 3]), tokens, torch.tensor([9, 10]))
    trace = greedy_prune(PackedScorer(model), seg, deletions=1, record_scores=True)
    scores = dict((int(i), s) for i, s in trace.step_scores[0])
    assert scores[0] == scores[1] == scores[2] and scores[4] == scores[5]
    assert trace.deletion_order == brute_force_greedy(model, seg, 1, "joint")


def test_recorded_scores_cover_every_kept_token():
    seg = segments(3, n=8)
    trace = greedy_prune(PackedScorer(tiny_llama()), seg, deletions=3, record_scores=True)
    assert [len(step) for step in trace.step_scores] == [8, 7, 6]
    for step, chosen, value in zip(trace.step_scores, trace.deletion_order, trace.step_objective[1:]):
        assert max(step, key=lambda pair: pair[1]) == [chosen, value]
    for chosen, after in zip(trace.deletion_order, trace.step_scores[1:]):
        assert chosen not in [int(i) for i, _ in after]


def test_deletion_count_is_checked():
    with pytest.raises(ValueError, match="cannot make 11 deletions from 10"):
        greedy_prune(ConstantScorer(model=None), segments(0), deletions=11)


def test_rounds_of_several_deletions():
    trace = greedy_prune(ConstantScorer(model=None), segments(0, n=7), deletions=7, per_step=3)
    assert trace.deletion_order == [0, 1, 2, 3, 4, 5, 6]
    assert [v is None for v in trace.step_objective] == [False, False, True, False, False, True, False, False]

    model = tiny_llama()
    seg = segments(4, n=9)
    rounds = greedy_prune(PackedScorer(model), seg, deletions=6, per_step=2)
    single = greedy_prune(PackedScorer(model), seg, deletions=1, record_scores=True)
    best_two = sorted(single.step_scores[0], key=lambda pair: -pair[1])[:2]
    assert rounds.deletion_order[:2] == [int(i) for i, _ in best_two]
    assert rounds.step_objective[1] == single.step_objective[1] and rounds.step_objective[2] is not None
    assert rounds.step_objective[-1] == pytest.approx(
        NaiveScorer(model)
        .objective(seg.with_kept(torch.tensor([i for i in range(9) if i not in rounds.deletion_order])), 6, 3)
        .values.item(),
        abs=1e-4,
    )


def test_exact_checks_score_every_candidate_without_changing_the_run():
    model, seg = tiny_llama(), segments(5, n=9)
    checks = ExactChecks.spread(PackedScorer(model), 3, deletions=6)
    assert checks.steps == {1, 3, 5}  # the middle of each third of the run
    exact = greedy_prune(PackedScorer(model), seg, deletions=6, record_scores=True)
    checked = greedy_prune(PackedScorer(model), seg, deletions=6, checks=checks)
    assert checked.deletion_order == exact.deletion_order
    assert checked.tokens_processed == exact.tokens_processed  # the checks are not the run's cost
    assert [c["step"] for c in checked.exact_checks] == [1, 3, 5]
    for check in checked.exact_checks:
        assert check["scores"] == exact.step_scores[check["step"]]  # the same scorer on the same chain
        assert check["tokens"] > 0
    assert check_regrets(checked.deletion_order, checked.exact_checks) == pytest.approx([0, 0, 0], abs=1e-9)

    # A scorer blind to the chain deletes the lowest index; the checks measure what each choice lost.
    blind = greedy_prune(ConstantScorer(model=None), seg, deletions=6, checks=checks)
    assert blind.deletion_order == [0, 1, 2, 3, 4, 5]
    regrets = check_regrets(blind.deletion_order, blind.exact_checks)
    for regret, check in zip(regrets, blind.exact_checks):
        scores = dict((int(i), s) for i, s in check["scores"])
        assert regret == pytest.approx(max(scores.values()) - scores[check["step"]]) and regret >= 0
    assert max(regrets) > 0
    with pytest.raises(ValueError, match="exact_checks must be a count"):
        ExactChecks.spread(PackedScorer(model), -1, 6)
