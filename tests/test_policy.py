"""The hybrid's policy without a model: its settings, the step function, the chain memory, the replay and the
calibration computed from stored evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from conftest import noisy_chains
from src.api import compose_config
from surrogate.calibration import check_evidence, evidence, margins_for, simulate
from surrogate.groups import Group
from surrogate.policy import (
    AGES,
    ChainMemory,
    HybridPolicy,
    Margins,
    StepView,
    age_bucket,
    lookahead_to_rerun,
    near_deletions,
    verify_step,
)
from surrogate.replay import remembered_lookahead, replay, step_agreement


def test_scorer_hybrid_composes_to_the_recommended_policy():
    """conf/scorer/hybrid.yaml spells out the dataclass's defaults: one policy, whichever way it is built."""
    node = compose_config("scorer=hybrid").scorer.policy
    assert instantiate(node) == HybridPolicy()
    assert set(node) - {"_target_"} == set(HybridPolicy().to_dict())
    assert compose_config("+experiment=demo").demo.hybrid.policy == node  # make demo runs the default


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"epsilon": 1.0}, "policy.epsilon"),
        ({"epsilon": -0.1}, "policy.epsilon"),
        ({"k_min": 0}, "policy.k_min"),
        ({"k_max": 2, "k_min": 4}, "policy.k_max"),
        ({"epsilon": None, "k_max": 8}, "policy.k_max"),
        ({"k_min": 8, "k_max": 8}, "policy.epsilon"),
        ({"first_round": 2}, "policy.first_round"),
        ({"epsilon": None, "first_round": 8}, "policy.first_round"),
        ({"round_size": 0}, "policy.round_size"),
        ({"refresh": -1}, "policy.refresh"),
        ({"lookahead_window": -1}, "policy.lookahead_window"),
    ],
)
def test_each_invalid_policy_fails_at_construction_naming_the_field(settings, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        HybridPolicy(**settings)


def test_a_policy_is_named_by_what_differs_from_the_default():
    assert HybridPolicy().label() == "eps=0.02"
    assert HybridPolicy(epsilon=0.05, round_size=2).label() == "eps=0.05,round_size=2"
    assert HybridPolicy(epsilon=None, k_min=8).label() == "k=8"
    assert HybridPolicy(epsilon=0.1).as_fixed() == HybridPolicy(epsilon=None)


def view(n: int, residual=None, ages=None, stale=()) -> StepView:
    residual = np.full(n, math.nan) if residual is None else np.asarray(residual, dtype=np.float64)
    return StepView(residual, ages or [None] * n, np.asarray(stale, dtype=np.int64), [])


def test_a_fixed_k_verifies_the_stale_tokens_and_the_top_k_by_estimate():
    predicted = np.array([0.0, 5.0, 1.0, 4.0, 3.0])
    exact = np.array([9.0, 8.0, 7.0, 6.0, 5.0])
    chosen, values = verify_step(HybridPolicy(None, 2), None, predicted, view(5, stale=[0]), exact.__getitem__)
    assert chosen.tolist() == [0, 1, 3] and values.tolist() == [9.0, 8.0, 6.0]
    remembered = view(5, residual=[math.nan, -10.0, 0.0, math.nan, math.nan])  # 1 was far too high, 2 right
    chosen, _ = verify_step(HybridPolicy(None, 2), None, predicted, remembered, exact.__getitem__)
    assert chosen.tolist() == [2, 3]  # estimates -5, -5, 1, -1, -2: the others carry the mean residual, -5


def test_epsilon_zero_verifies_everything_in_one_round_and_k_max_caps_it():
    calls = []

    def exact(index):
        calls.append(len(index))
        return -np.asarray(index, dtype=np.float64)

    predicted = np.arange(10.0)
    chosen, _ = verify_step(HybridPolicy(0.0), Margins(math.inf, ()), predicted, view(10), exact)
    assert sorted(chosen.tolist()) == list(range(10)) and calls == [10]
    chosen, _ = verify_step(HybridPolicy(0.0, 2, 5), Margins(math.inf, ()), predicted, view(10), exact)
    assert len(chosen) == 5


def test_the_stop_rule_stops_when_the_best_verified_clears_every_bound():
    margins = Margins(1.0, (1.0,) * (len(AGES) + 2))
    predicted = np.array([10.0, 0.0, -1.0, -2.0, 9.5, -3.0])
    rounds = []

    def exact(index):
        rounds.append(sorted(np.asarray(index).tolist()))
        return predicted[index]  # a perfect surrogate

    policy = HybridPolicy(0.1, k_min=1, first_round=1, round_size=1)
    verify_step(policy, margins, predicted, view(6), exact)
    assert rounds == [[0], [4]]  # 9.5 + 1 > 10 needs checking; then 10 ≥ 0 + 1 settles it
    rounds.clear()
    verify_step(policy, Margins(100.0, margins.spread), predicted, view(6), exact)
    assert len(rounds) == 6  # a huge margin checks everything
    rounds.clear()
    verify_step(HybridPolicy(0.1, k_min=1, round_size=1), margins, predicted, view(6), exact)
    assert rounds == [[0, 4]]  # by reach: both bounds reach the best estimate, 10, so both go in the first round


def test_the_memory_ages_stale_tokens_and_survives_json():
    memory = ChainMemory()
    memory.learn([0, 1, 2, 3, 4, 5], [0.5] * 6, kept=list(range(6)))
    kept = [0, 1, 3, 4, 5]  # 2 was deleted
    seen = memory.view(kept, candidates=[0, 1, 2, 3, 4], refresh=1)
    assert seen.deleted_at == [2] and seen.stale.tolist() == [1, 2]  # the kept tokens beside the gap
    assert seen.ages == [1] * 5 and seen.residual.tolist() == [0.5] * 5
    assert ChainMemory.from_json(memory.to_json()) == memory
    assert ChainMemory.from_json(None) == ChainMemory()
    assert [age_bucket(a) for a in (1, 2, 3, 8, 9, None)] == [0, 1, 2, 3, 4, 5]
    assert near_deletions([3], 2, 10) == {1, 2, 3, 4}
    memory.lookahead = {0: 1.0, 1: 1.0, 4: 1.0, 5: 1.0}
    assert lookahead_to_rerun(memory, kept, [0, 1, 2, 3, 4], window=1) == [1, 2]  # beside the gap, and never seen
    assert lookahead_to_rerun(memory, kept, [0, 1, 2, 3, 4], window=None) == [0, 1, 2, 3, 4]


def test_a_replay_of_a_perfect_ranking_stops_at_once_and_a_margin_buys_back_a_noisy_one():
    groups, noisy = noisy_chains()
    policy, spread = HybridPolicy(0.05, k_min=1, round_size=1, refresh=0), (1.0,) * 6
    perfect = replay(groups, [g.labels for g in groups], policy, Margins(0.0, spread)).verified
    assert step_agreement(groups, perfect) == 1.0 and {len(v) for v in perfect} == {1}
    bold = replay(groups, noisy, policy, Margins(0.0, spread)).verified
    careful = replay(groups, noisy, policy, Margins(5.0, spread)).verified
    assert step_agreement(groups, bold) < 1.0 == step_agreement(groups, careful)
    assert sum(map(len, careful)) > sum(map(len, bold))
    fixed = replay(groups, noisy, HybridPolicy(None, 3, refresh=0), None).verified
    assert {len(v) for v in fixed} == {3}


def test_a_replay_scores_only_the_first_token_of_a_run():
    y = torch.tensor([1.0, 1.0, 3.0, 0.0], dtype=torch.float64)
    group = Group("a", 0, torch.zeros(4, 0), y, y, torch.arange(4), torch.tensor([0, 2, 3]))
    chosen = replay([group], [y], HybridPolicy(None, 2), None).verified[0]
    assert chosen.tolist() == [1, 0]  # indices into the candidates: token 2, then token 0


def test_margins_come_from_the_evidence_at_load_and_hold_the_miss_rate():
    """ε, k_min and refresh change the margins with no retraining; the simulated miss rate stays under ε."""
    groups, predictions = noisy_chains(records=8)
    stored = evidence(groups, predictions, lookahead_window=6)
    for policy in (HybridPolicy(0.05), HybridPolicy(0.2), HybridPolicy(0.05, k_min=2, refresh=0)):
        margins = margins_for(stored, policy)
        miss, verified = simulate(stored, policy, margins)
        assert miss <= policy.epsilon and len(margins.spread) == len(AGES) + 2
    loose, tight = margins_for(stored, HybridPolicy(0.2)), margins_for(stored, HybridPolicy(0.01))
    assert loose.z < tight.z
    assert margins_for(stored, HybridPolicy(0.0)).z == math.inf and margins_for(None, HybridPolicy(0.0)).z == math.inf
    assert margins_for(stored, HybridPolicy(None)) is None and margins_for(None, HybridPolicy()) is None


def test_evidence_for_another_lookahead_window_or_layout_is_refused():
    groups, predictions = noisy_chains(records=2, steps=2)
    stored = evidence(groups, predictions, lookahead_window=6)
    check_evidence(stored, HybridPolicy(lookahead_window=2), horizon=0)  # no lookahead prior: any window
    with pytest.raises(ValueError, match="calibrate_surrogate .*lookahead_window=2"):
        check_evidence(stored, HybridPolicy(lookahead_window=2), horizon=4)
    with pytest.raises(ValueError, match="predates margins computed at load"):
        check_evidence({"table": []}, HybridPolicy(), horizon=0)


def test_a_replayed_lookahead_reruns_only_near_the_last_deletion():
    """The replayed prior is this step's f plus the f_h − f remembered from the step that last computed it."""
    kept = [[0, 1, 2, 3, 4, 5], [0, 1, 3, 4, 5], [0, 1, 3, 4]]

    def group(step, prior):
        features = prior[:, None].float().clone()
        return Group("a", step, features, prior, torch.zeros(len(kept[step])), torch.tensor(kept[step]))

    base = [group(s, torch.zeros(len(k), dtype=torch.float64)) for s, k in enumerate(kept)]
    horizon = [group(s, torch.full((len(k),), float(s + 1), dtype=torch.float64)) for s, k in enumerate(kept)]
    every, reran = remembered_lookahead(horizon, base, window=10, prior_column=0)
    assert reran == [6, 5, 4] and all(torch.equal(a.prior, b.prior) for a, b in zip(every, horizon))
    near, reran = remembered_lookahead(horizon, base, window=1, prior_column=0)
    assert reran == [6, 2, 1]  # step 1: the tokens beside the gap at 2; step 2: the one before the gap at 4
    assert near[1].prior.tolist() == [1.0, 2.0, 2.0, 1.0, 1.0] and near[2].prior.tolist() == [1.0, 2.0, 2.0, 3.0]
    assert torch.equal(near[2].features[:, 0].double(), near[2].prior)
    with pytest.raises(ValueError, match="horizon-0 steps do not match"):
        remembered_lookahead(horizon, base[::-1], window=1, prior_column=0)
