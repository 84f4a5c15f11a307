"""The surrogate pipeline on a tiny model: label, train (Lightning), evaluate, and prune with the hybrid."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from conftest import tiny_llama
from exact import GreedyPruner, GreedyTrace
from exact.scorers import PackedScorer
from src.api import compose_config
from src.run import run_task
from surrogate.calibration import calibrate, calibrate_memory, margin_for
from surrogate.groups import Group
from surrogate.hybrid import HybridScorer
from surrogate.metrics import argmax_verified, carried_residual, remembered_lookahead
from surrogate.models import Surrogate
from surrogate.store import load_surrogate
from surrogate.verification import (
    AGES,
    age_bucket,
    age_margins,
    lookahead_to_rerun,
    memory_ages,
    near_deletions,
    verify_adaptively,
)

RICH = "attention+next_attention+answer_attention+first_order+position+token_class"
REASONINGS = ["3 + 4 = 7, so 7 pens.", "2 * 5 = 10 apples.", "9 - 3 = 6 left.", "8 / 2 = 4 each.", "1 + 1 = 2 cats."]


@pytest.fixture(scope="module")
def labels(tmp_path_factory, tiny_model_dir) -> Path:
    """A labelling run (exact greedy with record_scores) over five tiny records."""
    root = tmp_path_factory.mktemp("labels")
    data = root / "chains.jsonl"
    rows = [
        {"id": f"r{i}", "question": "How many?", "reasoning": r, "answer": str(i)} for i, r in enumerate(REASONINGS)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config(
        "+experiment=label", "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={data}",
        "data.reasoning_tokens=null", f"output_dir={root / 'run'}", "logger=none", "runtime.progress=false",
    )  # fmt: skip
    assert run_task(cfg)["pruned"] == 5
    return root / "run" / "records.jsonl"


def surrogate_overrides(tiny_model_dir: str, labels: Path, out: Path, *extra: str) -> list[str]:
    return [
        "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", "data.path=unused", f"surrogate.labels=[{labels}]",
        f"surrogate.feature_cache={out / 'features'}", f"output_dir={out}", "logger=none", "runtime.progress=false",
        "surrogate.max_steps=6", "surrogate.val_every_steps=2", "surrogate.groups_per_batch=4", "surrogate.hidden=16",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kind, feature_set, residual",
    [("mlp", "attention", False), ("linear", "attention+surprisal+position", False), ("mlp", RICH, True)],
)
def test_train_and_evaluate_a_surrogate(tmp_path, tiny_model_dir, labels, kind, feature_set, residual):
    out = tmp_path / "train"
    overrides = surrogate_overrides(
        tiny_model_dir, labels, out, f"surrogate={kind}", f"surrogate.feature_set={feature_set}",
        f"surrogate.residual={residual}", f"surrogate.horizon={2 if residual else 0}",
    )  # fmt: skip
    report = run_task(compose_config("+experiment=train_surrogate", *overrides))
    assert report["records"] == {"train": 4, "val": 1} and report["kind"] == kind
    assert report["feature_set"] == feature_set and report["residual"] == residual
    assert report["horizon"] == (2 if residual else 0)
    assert -1 <= report["val"]["pearson"] <= 1 and 0 <= report["val"]["recall@16"] <= 1
    assert -1 <= report["val"]["pooled_pearson"] <= 1 and "recall@2" in report["val"]
    assert list((out / "checkpoints").glob("*.ckpt")) and any((out / "features").rglob("*.pt"))

    surrogate, meta = load_surrogate(str(out / "surrogate.pt"), tiny_model_dir, tiny_llama())
    assert meta["kind"] == kind and surrogate.config == {**surrogate.config, "kind": kind, "feature_set": feature_set}
    calibration = surrogate.calibration
    assert calibration["steps"] == report["steps"]["val"] and calibration["round_size"] == 2
    misses = [miss for _, miss, _ in calibration["table"]]
    assert misses[-1] == 0.0 and all(0 <= m <= 1 for m in misses)  # a 100-nat margin verifies everything
    memory = calibration["memory"]  # replayed along the validation record's path, lookahead remembered if any
    assert memory["policy"] == {"first_k": 16, "refresh": 1, "lookahead_refresh": 6 if residual else None}
    assert memory["steps"] == report["steps"]["val"] and memory["table"][-1][1] == 0.0
    assert len(memory["spread"]) == len(AGES) + 2 and all(s > 0 for s in memory["spread"])
    assert set(report["calibration"]) == {"alone", "memory"} and "0.05" in report["calibration"]["memory"]

    evaluated = run_task(
        compose_config(
            "+experiment=eval_surrogate",
            *overrides,
            f"+evaluate.surrogates.trained={out / 'surrogate.pt'}",
            "+evaluate.surrogates.lookahead=first_order@3",
            "~evaluate.surrogates.shipped",
            "~evaluate.labels",
            f"+evaluate.labels={{held_out: [{labels}]}}",
            "evaluate.carried=[trained,lookahead]",
            "evaluate.remember_first_k=16",
            "evaluate.remember_refresh=1",
            "evaluate.remember_lookahead=6",
            "evaluate.remember_epsilons=[0.1]",
            f"output_dir={tmp_path / 'eval'}",
        )  # fmt: skip
    )["sets"]
    assert set(evaluated) == {"held_out"}
    evaluated = evaluated["held_out"]
    assert evaluated["records"] == 5
    replay = "remembered@8,first@16,refresh@1"
    memories = {f"{name}+{memory}" for name in ("trained", "lookahead") for memory in ("carried", replay)}
    lookahead = {f"lookahead+{replay},lookahead@6"} | (
        {f"trained+{replay},lookahead@6"} if residual else set()  # only a surrogate with a horizon
    )
    adaptive = {"trained+remembered@eps0.1,first@16,refresh@1,lookahead@6"} if residual else set()  # calibrated
    assert set(evaluated["surrogates"]) == {"first_order", "trained", "lookahead"} | memories | lookahead | adaptive
    assert all(evaluated["surrogates"][name]["verified_per_step"] > 0 for name in adaptive)
    assert all(0 < evaluated["surrogates"][name]["lookahead_per_step"] for name in lookahead)
    assert all("memory" in evaluated["surrogates"][name] for name in memories)
    assert evaluated["surrogates"]["lookahead"]["horizon"] == 3 and evaluated["surrogates"]["trained"]["horizon"] == (
        2 if residual else 0
    )
    for row in evaluated["surrogates"].values():
        assert set(row) >= {"pearson", "spearman", "pooled_pearson", "recall@1", "recall@8"}


def test_evaluating_carried_residuals_of_an_unknown_surrogate_is_refused(tmp_path, tiny_model_dir, labels):
    one_set = ["~evaluate.labels", f"+evaluate.labels={{x: [{labels}]}}"]
    overrides = surrogate_overrides(tiny_model_dir, labels, tmp_path, "evaluate.carried=[missing]", *one_set)
    with pytest.raises(ValueError, match=r"evaluate.carried names \['missing'\]"):
        run_task(compose_config("+experiment=eval_surrogate", *overrides))


def test_carried_residual_adds_the_previous_steps_exact_residuals():
    """The oracle adds every candidate's residual of the step before; a record's first step is left as it is."""
    residual = {0: -1.0, 1: -3.0, 2: -0.5}
    kept = [[0, 1, 2], [0, 2], [0, 1, 2]]
    prior = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, 4.0]), torch.tensor([0.0, 0.0, 0.0])]
    groups = [
        Group(record, step, torch.zeros(len(k), 0), p, p + torch.tensor([residual[q] for q in k]), torch.tensor(k))
        for record, step, k, p in zip(["a", "a", "b"], [0, 1, 0], kept, prior)
    ]
    carried, remembered, ages = carried_residual(groups, [g.prior for g in groups])
    assert all(torch.equal(r, torch.arange(len(k))) for r, k in zip(remembered, kept))  # every candidate
    assert torch.equal(carried[0], prior[0].double()) and torch.equal(carried[2], prior[2].double())
    assert torch.allclose(carried[1], groups[1].labels.double())
    assert ages == [[None] * 3, [1, 1], [None] * 3]  # deletions since verified; a new record starts afresh


def test_a_replayed_memory_keeps_only_what_was_verified():
    """With `verified` k, a step remembers the residuals of its top k only; the others keep older ones."""
    kept = [[0, 1, 2, 3], [0, 1, 3], [0, 3]]
    prior = [torch.zeros(4), torch.tensor([9.0, 0.0, 0.0]), torch.zeros(2)]
    residuals = [torch.tensor([-1.0, -2.0, -3.0, -4.0]), torch.tensor([-1.0, -2.0, -0.5]), torch.zeros(2)]
    groups = [
        Group("a", step, torch.zeros(len(k), 0), p, p + r, torch.tensor(k))
        for step, (k, p, r) in enumerate(zip(kept, prior, residuals))
    ]
    oracle = carried_residual(groups, [g.prior for g in groups]).estimates
    replay, verified, ages = carried_residual(groups, [g.prior for g in groups], verified=1)
    assert torch.allclose(replay[1], oracle[1])  # step 0 verified every candidate
    # step 1 verified only candidate 0 (prior 9); candidate 3 still carries its residual of step 0
    assert torch.allclose(oracle[2], torch.tensor([-1.0, -0.5], dtype=torch.float64))
    assert torch.allclose(replay[2], torch.tensor([-1.0, -4.0], dtype=torch.float64))
    assert [v.tolist() for v in verified] == [[0, 1, 2, 3], [0], [0]]
    assert ages[2] == [1, 2]  # token 3 was last verified two deletions ago


def test_a_replayed_first_step_can_verify_a_shortlist_and_imputes_the_mean_residual():
    """With `first_k`, the first step remembers only its top first_k; the rest then carry their mean residual."""
    kept = [[0, 1, 2, 3], [0, 1, 2, 3]]
    prior = [torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([4.0, 3.0, 2.0, 1.0])]
    residuals = [torch.tensor([-6.0, -2.0, 0.0, 0.0]), torch.zeros(4)]
    groups = [
        Group("a", step, torch.zeros(4, 0), p, p + r, torch.tensor(k))
        for step, (k, p, r) in enumerate(zip(kept, prior, residuals))
    ]
    replay, verified, _ = carried_residual(groups, [g.prior for g in groups], verified=2, first_k=2)
    assert verified[0].tolist() == [0, 1]  # the top 2 by prior
    # candidates 2 and 3 were never verified: they carry the mean of -6 and -2
    assert torch.allclose(replay[1], torch.tensor([-2.0, 1.0, -2.0, -3.0], dtype=torch.float64))
    assert verified[1].tolist() == [0, 1]  # 1 is best; 0 and 2 tie at -2, and the lower index wins


def test_near_deletions_names_the_kept_tokens_beside_each_gap():
    assert near_deletions([3], 1, 6).tolist() == [2, 3]  # the kept tokens left and right of the gap
    assert near_deletions([0, 6], 2, 6).tolist() == [0, 1, 4, 5]  # clipped to the chain
    assert near_deletions([], 1, 6).tolist() == []


def test_lookahead_is_rerun_near_the_deletion_and_where_never_computed():
    positions = [0, 2, 3, 4, 5]  # candidates' places among 6 kept tokens
    assert lookahead_to_rerun(positions, {0, 2, 3, 4, 5}, [3], 1, 6) == [1, 2]  # places 2 and 3, beside the gap
    assert lookahead_to_rerun(positions, {0, 2, 3}, [3], 1, 6) == [1, 2, 3, 4]  # 4 and 5 were never computed
    assert lookahead_to_rerun(positions, set(), [], 1, 6) == [0, 1, 2, 3, 4]  # a chain's first step: all


def test_a_replayed_memory_refreshes_the_neighbours_of_the_last_deletion():
    """With `refresh` 1, a step also verifies the kept tokens on each side of the step before's deletion."""
    kept = [[0, 1, 2, 3, 4], [0, 1, 3, 4], [0, 1, 3, 4]]
    prior = [torch.tensor([0.0, 0.0, 9.0, 0.0, 0.0]), torch.tensor([5.0, 0.0, 0.0, 0.0]), torch.zeros(4)]
    groups = [
        Group("a", step, torch.zeros(len(k), 0), p, p - 1.0, torch.tensor(k))
        for step, (k, p) in enumerate(zip(kept, prior))
    ]
    plain = carried_residual(groups, [g.prior for g in groups], verified=1).verified
    refreshed = carried_residual(groups, [g.prior for g in groups], verified=1, refresh=1).verified
    assert plain[1].tolist() == [0] and refreshed[1].tolist() == [0, 1, 2]  # tokens 1 and 3 were next to 2
    assert refreshed[2].tolist() == [0]  # nothing was deleted between steps 1 and 2 of this path


def test_a_replayed_lookahead_memory_reruns_only_near_the_last_deletion():
    """The replayed prior is this step's f plus the f_h − f remembered from the step that last computed it."""
    kept = [[0, 1, 2, 3, 4, 5], [0, 1, 2, 4, 5], [0, 2, 4, 5]]
    first_order = [torch.arange(len(k), dtype=torch.float64) for k in kept]  # f
    correction = [torch.tensor([10.0 * (step + 1) + q for q in k]) for step, k in enumerate(kept)]  # f_h − f
    lookahead = [f + c for f, c in zip(first_order, correction)]

    def group(step, prior, features):
        return Group("a", step, features, prior, torch.zeros(len(kept[step])), torch.tensor(kept[step]))

    features = [(p - 100.0).float().reshape(-1, 1) for p in lookahead]  # one column: f_h − J, with J = 100
    horizon = [group(step, p, f) for step, (p, f) in enumerate(zip(lookahead, features))]
    base = [group(step, p, torch.zeros(len(p), 1)) for step, p in enumerate(first_order)]
    every, reran = remembered_lookahead(horizon, base, window=10, prior_column=0)
    assert all(torch.equal(r.prior, g.prior) for r, g in zip(every, horizon)) and reran == [6, 5, 4]
    near, reran = remembered_lookahead(horizon, base, window=1, prior_column=0)
    assert reran == [6, 2, 2]  # step 1: the kept tokens 2 and 4 beside deleted 3; step 2: 0 and 2 beside 1
    # step 2 kept [0, 2, 4, 5]: 0 and 2 rerun (correction 30 + q), 4 from step 1 (20 + 4), 5 from step 0 (10 + 5)
    assert near[2].prior.tolist() == [0 + 30, 1 + 32, 2 + 24, 3 + 15]
    assert torch.allclose(near[2].features[:, 0].double(), near[2].prior - 100.0)  # the column moved with it
    with pytest.raises(ValueError, match="horizon-0 steps do not match"):
        remembered_lookahead(horizon, base[::-1], window=1, prior_column=0)


def test_first_order_surrogate_is_calibrated_without_training(tmp_path, tiny_model_dir, labels):
    out = tmp_path / "train"
    report = run_task(
        compose_config(
            "+experiment=train_surrogate", *surrogate_overrides(tiny_model_dir, labels, out), "surrogate=first_order"
        )  # fmt: skip
    )
    assert report["kind"] == "first_order" and report["best_val_pearson"] is None
    assert not (out / "checkpoints").exists()
    surrogate, _ = load_surrogate(str(out / "surrogate.pt"), tiny_model_dir, tiny_llama())
    assert surrogate.net is None and surrogate.calibration["table"]


def test_residual_checkpoint_round_trip_and_refusals(tmp_path):
    model = tiny_llama()  # 2 layers × 4 heads
    surrogate = Surrogate(2 * 8 + 6, "mlp", hidden=8, feature_set="attention+next_attention+first_order",
                          residual=True, horizon=3)  # fmt: skip
    surrogate.fit_normalizer(torch.rand(40, 22))
    surrogate.calibration = {"scale": 1.0, "round_size": 2, "steps": 1, "table": [[0.0, 0.0, 2.0]]}
    surrogate.save(tmp_path / "r.pt", meta={"pruner": "model-a"})
    loaded, _ = load_surrogate(str(tmp_path / "r.pt"), "model-a", model)
    x, prior = torch.rand(5, 22), torch.randn(5, dtype=torch.float64)
    assert torch.equal(loaded(x, prior), surrogate.eval()(x, prior))
    assert loaded.config["horizon"] == 3 and loaded.calibration == surrogate.calibration
    assert torch.allclose(loaded(x, prior + 1.0) - loaded(x, prior), torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs the candidates' first-order scores"):
        loaded(x)
    with pytest.raises(ValueError, match="takes 22 features, but its feature set .* gives 38 for this model"):
        load_surrogate(str(tmp_path / "r.pt"), "model-a", tiny_llama_wide())
    blob = torch.load(tmp_path / "r.pt", weights_only=True)
    blob["config"]["feature_set"] = "attention+colour"
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="cannot be read by this version: bad feature set 'attention\\+colour'"):
        load_surrogate(str(tmp_path / "future.pt"), "model-a")


def tiny_llama_wide():
    """A tiny Llama with more layers and heads than the conftest one (4 × 4 instead of 2 × 4)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import TINY

    return LlamaForCausalLM(LlamaConfig(vocab_size=128, **{**TINY, "num_hidden_layers": 4})).eval()


def test_checkpoint_round_trip_and_wrong_model(tmp_path):
    surrogate = Surrogate(12, "mlp", hidden=8)
    surrogate.fit_normalizer(torch.rand(50, 12))
    surrogate.save(tmp_path / "s.pt", meta={"pruner": "model-a"})
    loaded, meta = load_surrogate(str(tmp_path / "s.pt"), "model-a")
    x = torch.rand(7, 12)
    assert torch.equal(loaded(x), surrogate.eval()(x)) and meta == {"pruner": "model-a"}
    with pytest.raises(ValueError, match="trained on the attention of 'model-a', not of 'model-b'"):
        load_surrogate(str(tmp_path / "s.pt"), "model-b")


def exact_and_hybrid(tokenizer, surrogate_kind="mlp", calibration=None, **hybrid):
    """The exact packed record of one chain, and the hybrid's with `hybrid` settings (and the surrogate's
    `calibration`), on one sdpa model."""
    model = tiny_llama(vocab_size=len(tokenizer))
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, surrogate_kind, hidden=8)
    surrogate.calibration = calibration
    question, reasoning, answer = "How many?", "12 + 30 = 42 apples in all.", "42"
    exact = GreedyPruner(model, tokenizer, scorer=PackedScorer(model, row_tokens=16, token_budget=48))
    expected = exact.prune(question, reasoning, answer, keep_fractions=[0.3], record_scores=True).record
    scorer = HybridScorer(model, surrogate, verify=partial(PackedScorer, row_tokens=16, token_budget=48), **hybrid)
    got = GreedyPruner(model, tokenizer, scorer=scorer).prune(
        question, reasoning, answer, keep_fractions=[0.3], record_scores=True
    )
    assert model.config._attn_implementation == "sdpa"  # only the base passes ran eager
    return expected, got.record


def assert_same_greedy(got, expected):
    """Same deletions; objectives and step scores equal within the scorers' tolerance (eager vs sdpa rounding)."""
    assert got.deletion_order == expected.deletion_order
    assert torch.allclose(torch.tensor(got.step_objective), torch.tensor(expected.step_objective), atol=1e-4)
    for mine, theirs in zip(got.step_scores, expected.step_scores):
        assert [i for i, _ in mine] == [i for i, _ in theirs]
        assert torch.allclose(torch.tensor(mine)[:, 1], torch.tensor(theirs)[:, 1], atol=1e-4)


def test_hybrid_with_every_candidate_is_exact_greedy(tokenizer):
    expected, got = exact_and_hybrid(tokenizer, k=10_000)
    assert got.method == "hybrid" and got.cost["shortlist_k"] == 10_000
    assert_same_greedy(got, expected)
    assert got.cost["verified_per_step"] == expected.cost["verified_per_step"]


def test_adaptive_with_epsilon_zero_is_exact_greedy(tokenizer):
    expected, got = exact_and_hybrid(tokenizer, epsilon=0.0, k_max=None)
    assert got.cost["epsilon"] == 0.0 and got.cost["margin_nats"] == float("inf")
    assert_same_greedy(got, expected)


def test_adaptive_record_reports_candidates_verified(tokenizer):
    expected, got = exact_and_hybrid(tokenizer, "first_order", epsilon=0.0, k_max=5)
    assert all(v <= 5 for v in got.cost["verified_per_step"]) and len(got.cost["verified_per_step"]) == len(
        got.deletion_order
    )
    for step, verified in zip(got.step_scores, got.cost["verified_per_step"]):
        assert len({score for _, score in step}) <= verified


def test_a_perfect_ranking_stops_verifying_early():
    torch.manual_seed(0)
    steps = [torch.randn(40, dtype=torch.float64) * 3 for _ in range(30)]
    noisy = [labels + torch.randn(40, dtype=torch.float64) * 3 for labels in steps]
    chosen = {}
    for name, predictions in {"perfect": steps, "noisy": noisy}.items():
        calibrated = calibrate(list(zip(predictions, steps)), round_size=2)
        margin = margin_for(calibrated, 0.1)
        chosen[name] = [
            verify_adaptively(p, lambda i, y=y: y[i], margin, calibrated["scale"], 2)[0]
            for p, y in zip(predictions, steps)
        ]
        missed = sum(float(y[c].max()) < float(y.max()) for c, y in zip(chosen[name], steps)) / len(steps)
        assert missed <= 0.1  # on its calibration steps the simulated miss rate holds
        assert margin_for(calibrated, 0.0) == float("inf")
    assert all(len(c) == 2 for c in chosen["perfect"])  # the first round settles it
    assert sum(map(len, chosen["noisy"])) > 2 * sum(map(len, chosen["perfect"]))
    everything, values = verify_adaptively(noisy[0], lambda i: steps[0][i], float("inf"), k_max=7)
    assert len(everything) == 7 and torch.equal(values, steps[0][everything])


def test_small_shortlists_verify_only_k_candidates(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer))
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear")
    pruner = GreedyPruner(model, tokenizer, scorer=HybridScorer(model, surrogate, k=3))
    record = pruner.prune("q", "a long enough chain of thought", "x", keep_fractions=[0.5], record_scores=True).record
    # three chains verified per step (a run of identical neighbours shares one chain and one score)
    assert all(len({score for _, score in step}) == 3 for step in record.step_scores)
    assert record.cost["verified_per_step"] == [3] * len(record.deletion_order)
    assert all(v is not None for v in record.step_objective)
    for step, chosen in zip(record.step_scores, record.deletion_order):
        assert chosen == max(step, key=lambda pair: pair[1])[0]


def test_hybrid_with_memory_and_every_candidate_is_exact_greedy(tokenizer):
    expected, got = exact_and_hybrid(tokenizer, k=10_000, memory=True)
    assert got.cost["memory"] is True
    assert_same_greedy(got, expected)


@pytest.mark.parametrize("first_k", [None, 3])
def test_memory_verifies_the_first_step_then_k_and_resumes_the_same(tokenizer, first_k):
    """The first step verifies every candidate (or the top first_k), later steps k; a resumed run remembers."""
    model = tiny_llama(vocab_size=len(tokenizer))
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear", residual=True)
    pruner = GreedyPruner(model, tokenizer, scorer=HybridScorer(model, surrogate, k=2, memory=True, first_k=first_k))
    chain = ("q", "a long enough chain of thought with more words", "x")
    states = []
    whole = pruner.prune(*chain, keep_fractions=[0.5], on_state=lambda t: states.append(copy.deepcopy(t))).record
    n = whole.n_reasoning_tokens
    first = n if first_k is None else first_k
    assert whole.cost["verified_per_step"][0] == first and set(whole.cost["verified_per_step"][1:]) == {2}
    assert whole.cost["first_k"] == first_k
    saved = states[2]
    assert {int(i) for i, _ in saved.memory} <= set(range(n)) and len(saved.memory) <= first + 2 * 2
    assert len(saved.memory) == n if first_k is None else len(saved.memory) < n
    saved = GreedyTrace(**json.loads(json.dumps(asdict(saved))))  # as a checkpoint file stores it
    resumed = pruner.prune(*chain, keep_fractions=[0.5], resume=saved).record
    assert resumed.deletion_order == whole.deletion_order
    assert resumed.cost["verified_per_step"] == whole.cost["verified_per_step"]  # the memory came back too


def test_refreshing_memory_verifies_the_neighbours_of_each_deletion(tokenizer):
    """With refresh 1, each step after the first verifies its top k and the kept tokens beside the last deletion."""
    model = tiny_llama(vocab_size=len(tokenizer))
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear", residual=True)
    chain = ("q", "a long enough chain of thought with more words", "x")

    def run(refresh: int):
        scorer = HybridScorer(model, surrogate, k=2, memory=True, first_k=2, refresh=refresh)
        return GreedyPruner(model, tokenizer, scorer=scorer).prune(*chain, keep_fractions=[0.5]).record

    plain, refreshed = run(0), run(1)
    assert set(plain.cost["verified_per_step"]) == {2} and refreshed.cost["refresh"] == 1
    # the top 2 and up to two neighbours (fewer where they coincide, repeat a token, or sit at an end)
    later = refreshed.cost["verified_per_step"][1:]
    assert refreshed.cost["verified_per_step"][0] == 2 and all(2 <= v <= 4 for v in later)
    assert max(later) == 4 and sum(later) > 2 * len(later)
    with pytest.raises(ValueError, match="scorer.refresh"):
        HybridScorer(model, surrogate, refresh=1)


def test_a_remembered_lookahead_reruns_only_near_the_last_deletion_and_stays_exact_at_k_all(tokenizer):
    """k = all with memory is exact greedy whatever the prior; remembering the lookahead makes it cheaper."""
    model = tiny_llama(vocab_size=len(tokenizer))
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, "linear", residual=True, horizon=3)
    chain = ("How many?", "12 + 30 = 42 apples in all, so forty-two.", "42")
    exact = GreedyPruner(model, tokenizer, scorer=PackedScorer(model)).prune(*chain, keep_fractions=[0.5]).record

    def run(lookahead_refresh):
        scorer = HybridScorer(model, surrogate, k=10_000, memory=True, lookahead_refresh=lookahead_refresh)
        return GreedyPruner(model, tokenizer, scorer=scorer).prune(*chain, keep_fractions=[0.5]).record

    every, near = run(None), run(1)
    assert every.deletion_order == near.deletion_order == exact.deletion_order
    assert near.cost["lookahead_refresh"] == 1 and every.cost["lookahead_refresh"] is None
    steps = len(exact.deletion_order) - 1  # steps after the first, which rerun the prior only near the deletion
    assert near.cost["tokens_processed"] < every.cost["tokens_processed"] - steps * 3  # ≥ one candidate of 3 saved


@pytest.mark.parametrize("settings", [{}, {"memory": True, "horizon": 0}, {"memory": True, "lookahead_refresh": -1}])
def test_a_remembered_lookahead_needs_memory_and_a_horizon(settings):
    model = tiny_llama()
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, "linear", residual=True, horizon=settings.pop("horizon", 2))
    with pytest.raises(ValueError, match="scorer.lookahead_refresh"):
        HybridScorer(model, surrogate, **{"lookahead_refresh": 1, **settings})


def test_memory_refuses_surrogate_only():
    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear")
    with pytest.raises(ValueError, match="scorer.memory remembers what it verifies"):
        HybridScorer(model, surrogate, memory=True, surrogate_only=True)


def test_adaptive_memory_needs_margins_calibrated_for_its_policy():
    """ε with memory reads its margin off the memory calibration, which must be of the scorer's own policy."""
    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear")
    surrogate.calibration = calibrate([(torch.randn(9), torch.randn(9)) for _ in range(20)])
    with pytest.raises(ValueError, match="calibrated under None"):
        HybridScorer(model, surrogate, memory=True, epsilon=0.1, first_k=2, refresh=1)
    policy = {"first_k": 2, "refresh": 1, "lookahead_refresh": None}
    table = [[0.0, 0.5, 2.0], [4.0, 0.05, 6.0]]
    surrogate.calibration["memory"] = {"policy": policy, "round_size": 3, "table": table}
    with pytest.raises(ValueError, match="no spread"):
        HybridScorer(model, surrogate, memory=True, epsilon=0.1, first_k=2, refresh=1)
    surrogate.calibration["memory"]["spread"] = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    with pytest.raises(ValueError, match="same memory policy"):
        HybridScorer(model, surrogate, memory=True, epsilon=0.1, first_k=4, refresh=1)
    scorer = HybridScorer(model, surrogate, memory=True, epsilon=0.1, first_k=2, refresh=1)
    assert scorer.margin == 4.0 and scorer.round_size == 3
    assert HybridScorer(model, surrogate, memory=True, epsilon=0.0).margin == float("inf")  # ε = 0 needs none


def test_adaptive_memory_with_epsilon_zero_is_exact_greedy(tokenizer):
    expected, got = exact_and_hybrid(tokenizer, epsilon=0.0, memory=True, refresh=1)
    assert got.cost["epsilon"] == 0.0 and got.cost["memory"] and got.cost["refresh"] == 1
    assert_same_greedy(got, expected)
    assert got.cost["verified_per_step"] == expected.cost["verified_per_step"]


def test_adaptive_memory_margins_scale_with_the_spread_by_memory_age(tokenizer):
    """The hybrid's margins are the calibrated margin times the spread at each candidate's memory age: a huge
    spread verifies everything (exact greedy), a tiny one far less."""
    policy = {"first_k": None, "refresh": 1, "lookahead_refresh": None}
    records = {}
    for name, spread in {"huge": 1e6, "tiny": 1e-6}.items():
        memory = {"policy": policy, "round_size": 2, "spread": [spread] * 6, "table": [[1.0, 0.05, 6.0]]}
        expected, records[name] = exact_and_hybrid(tokenizer, calibration={"memory": memory}, epsilon=0.1,
                                                   memory=True, refresh=1)  # fmt: skip
        assert records[name].cost["margin_spreads"] == 1.0 and records[name].cost["spread_by_age_nats"] == [spread] * 6
    assert_same_greedy(records["huge"], expected)
    assert records["huge"].cost["verified_per_step"] == expected.cost["verified_per_step"]
    assert sum(records["tiny"].cost["verified_per_step"]) < sum(expected.cost["verified_per_step"])


def test_memory_ages_bucket_the_deletions_since_a_candidate_was_verified():
    assert [age_bucket(a) for a in (1, 2, 3, 4, 5, 8, 9, 40, None)] == [0, 1, 2, 2, 3, 3, 4, 4, 5]
    assert memory_ages({5: 10, 7: 12}, [5, 6, 7], 9) == [1, None, 3]
    spread = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert age_margins([1, None, 3], spread, 2.0).tolist() == [2.0, 12.0, 6.0]


def test_adaptive_verification_goes_down_the_bound_when_margins_differ():
    """With one margin for all the rounds follow the prediction; with each candidate's, prediction plus margin."""
    predicted, labels = torch.tensor([5.0, 4.0, 0.0]), torch.tensor([5.0, 4.0, 9.0], dtype=torch.float64)
    alike, _ = verify_adaptively(predicted, labels.__getitem__, 0.0, offset=False, round_size=1)
    margins = torch.tensor([0.0, 0.0, 10.0])
    each, _ = verify_adaptively(predicted, labels.__getitem__, margins, offset=False, round_size=1)
    assert alike.tolist() == [0] and each.tolist() == [2]  # the unsure candidate is checked first, and is the best


def test_a_memory_replay_with_a_perfect_ranking_verifies_little():
    """Calibrated on its own exact paths, adaptive memory keeps its miss rate, and verifies far less when the
    predictions are the exact scores than when they are noisy."""
    torch.manual_seed(0)
    groups = []
    for record in range(6):
        kept = list(range(30))
        for step in range(8):
            labels = torch.randn(len(kept), dtype=torch.float64) * 3
            groups.append(Group(f"r{record}", step, torch.zeros(len(kept), 0), labels, labels, torch.tensor(kept)))
            kept = kept[: int(labels.argmax())] + kept[int(labels.argmax()) + 1 :]
    noisy = [g.labels + torch.randn(len(g.labels), dtype=torch.float64) * 3 for g in groups]
    policy = {"first_k": 4, "refresh": 1, "lookahead_refresh": None}
    per_step = {}
    for name, predictions in {"perfect": [g.labels for g in groups], "noisy": noisy}.items():
        calibration = calibrate_memory(groups, predictions, policy, round_size=2)
        margin = margin_for({"memory": calibration}, 0.1, policy)
        verified = carried_residual(groups, predictions, None, 4, 1, margin, 2, spread=calibration["spread"]).verified
        assert 1 - argmax_verified(groups, verified) <= 0.1  # on its calibration paths the miss rate holds
        per_step[name] = sum(map(len, verified)) / len(verified)
    assert per_step["perfect"] < 6 and per_step["noisy"] > per_step["perfect"] + 3
    everything = carried_residual(groups, noisy, None, None, 0, float("inf"), 2).verified
    assert all(len(chosen) == len(g.labels) for chosen, g in zip(everything, groups))  # no margin: all


@pytest.mark.parametrize("settings", [{"first_k": 4}, {"first_k": 0, "memory": True}])
def test_a_first_step_shortlist_needs_memory(settings):
    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear")
    with pytest.raises(ValueError, match="scorer.first_k"):
        HybridScorer(model, surrogate, **settings)


def test_bench_hybrid_reports_every_method(tmp_path, tiny_model_dir):
    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear", residual=True)
    torch.manual_seed(0)
    surrogate.calibration = calibrate([(torch.randn(9), torch.randn(9)) for _ in range(20)])
    policy = {"first_k": 2, "refresh": 1, "lookahead_refresh": None}
    table, spread = [[0.0, 0.5, 2.0], [1.0, 0.2, 3.0]], [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    surrogate.calibration["memory"] = {"policy": policy, "round_size": 2, "spread": spread, "table": table}
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir, "kind": "linear"})
    chains = tmp_path / "chains.jsonl"
    long = "Then 4 + 4 = 8 and 8 * 2 = 16, so we have 16 pens left over."
    rows = [{"id": f"c{i}", "question": "How many?", "reasoning": r, "answer": "1"} for i, r in enumerate(REASONINGS)]
    rows.append({"id": "long", "question": "How many?", "reasoning": long, "answer": "16"})
    chains.write_text("".join(json.dumps(r) + "\n" for r in rows))
    methods = "{f_only: {surrogate: first_order, k: 1}, hybrid_k2: {k: 2}, all: {k: 1000}, adaptive: {epsilon: 0.3}, "
    methods += "memory: {k: 2, memory: true}, memory_first: {k: 2, memory: true, first_k: 2}, "
    methods += "memory_all: {k: 1000, memory: true, first_k: 1000}, memory_refresh: {k: 2, memory: true, refresh: 1}, "
    methods += "lookahead_all: {surrogate: first_order@2, k: 1000, memory: true, lookahead_refresh: 1}, "
    methods += "memory_adaptive: {epsilon: 0.3, memory: true, first_k: 2, refresh: 1}, "
    methods += "memory_adaptive_all: {epsilon: 0.0, memory: true, refresh: 1}}"
    cfg = compose_config(
        "+experiment=bench_hybrid", "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={chains}",
        "data.limit=2", "data.reasoning_tokens=[5,40]", f"bench.hybrid.surrogate={tmp_path / 's.pt'}",
        "~bench.methods", f"+bench.methods={methods}",
        "bench.long.limit=1", "bench.long.reasoning_tokens=[50,80]", "bench.long.steps=3",
        f"output_dir={tmp_path / 'out'}", "runtime.progress=false", "logger=none",
    )  # fmt: skip
    report = run_task(cfg)
    assert json.loads((tmp_path / "out" / "bench_hybrid.json").read_text()) == report
    assert (tmp_path / "out" / "dial.png").stat().st_size > 0
    methods = report["methods"]
    assert set(methods) == {
        "exact_packed",
        "f_only",
        "hybrid_k2",
        "all",
        "adaptive",
        "memory",
        "memory_first",
        "memory_all",
        "memory_refresh",
        "lookahead_all",
        "memory_adaptive",
        "memory_adaptive_all",
    }
    assert methods["memory"]["verified_per_step"] > 2  # its first step verifies every candidate
    assert methods["memory_first"]["verified_per_step"] == 2  # ... this one only its top 2
    assert methods["memory_refresh"]["verified_per_step"] > methods["memory"]["verified_per_step"]
    assert methods["exact_packed"]["speedup_wall"] == 1.0 and methods["exact_packed"]["step_agreement"] == 1.0
    assert 2 <= methods["memory_adaptive"]["verified_per_step"] < methods["memory_adaptive_all"]["verified_per_step"]
    for name in ("all", "memory_all", "lookahead_all", "memory_adaptive_all"):
        assert methods[name]["jaccard"] == {"0.9": 1.0, "0.7": 1.0, "0.5": 1.0}
        assert methods[name]["step_agreement"] == 1.0 and abs(methods[name]["final_objective_gap_nats"]) < 1e-4
        assert {row["jaccard"] for row in methods[name]["per_record"].values()} == {1.0}
    assert list(methods["hybrid_k2"]["per_record"]) == [r["id"] for r in report["records"]]
    assert methods["hybrid_k2"]["tokens_processed"] < methods["exact_packed"]["tokens_processed"]
    assert methods["hybrid_k2"]["verified_per_step"] <= 2 and methods["f_only"]["verified_per_step"] == 1
    assert methods["f_only"]["speedup_tokens"] > methods["hybrid_k2"]["speedup_tokens"]
    for row in methods.values():
        assert 0 <= row["step_agreement"] <= 1 and row["final_objective_gap_nats"] <= 1e-4
    assert set(report["baselines"]) == {"h2o", "surprisal", "uniform"}
    assert all(row["objective_gap_nats"]["0.5"] <= 1e-4 for row in report["baselines"].values())
    long = report["long"]
    assert [r["id"] for r in long["records"]] == ["long"] and long["steps"] == 3
    assert long["methods"]["all"]["same_deletions"] == 1.0 and long["methods"]["all"]["step_agreement"] == 1.0
    assert long["methods"]["hybrid_k2"]["tokens_per_step"] < long["methods"]["exact_packed"]["tokens_per_step"]


def test_hybrid_pruner_from_config(tmp_path, tiny_model_dir):
    from src.api import load_pruner

    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "mlp", hidden=4)
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir})
    common = ("scorer=hybrid", "model=hf", f"model.path={tiny_model_dir}")
    pruner = load_pruner(*common, f"scorer.surrogate={tmp_path / 's.pt'}", "scorer.k=4")
    assert pruner.scorer.settings() == {
        "scorer": "hybrid", "surrogate": "mlp", "feature_set": "attention", "horizon": 0, "shortlist_k": 4,
        "memory": False,
    }  # fmt: skip
    remembering = load_pruner(*common, f"scorer.surrogate={tmp_path / 's.pt'}", "scorer.memory=true").scorer
    assert remembering.remembers and remembering.settings()["memory"] is True
    assert remembering.settings()["first_k"] is None and remembering.settings()["refresh"] == 0
    shortlisted = load_pruner(
        *common, f"scorer.surrogate={tmp_path / 's.pt'}", "scorer.memory=true", "scorer.first_k=3"
    )
    assert shortlisted.scorer.settings()["first_k"] == 3
    assert pruner.scorer.model.config._attn_implementation == "sdpa"  # eager only inside its base passes
    assert pruner.prune("q", "one two three", "x").record.method == "hybrid"
    assert load_pruner(*common, f"scorer.surrogate={tmp_path / 's.pt'}", "scorer.surrogate_only=true").scorer.k == 1
    with pytest.raises(ValueError, match="no shipped surrogate"):
        load_pruner(*common)
    lookahead = load_pruner(*common, "scorer.surrogate=first_order@4", "scorer.k=2")
    assert lookahead.scorer.settings()["horizon"] == 4
    assert lookahead.prune("q", "one two three", "x").record.cost["verified_per_step"][0] == 2
    with pytest.raises(ValueError, match="first_order@H"):
        load_pruner(*common, "scorer.surrogate=first_order@x")
    # What it cannot honour fails loudly: verification without a base pass, a misspelled key.
    naive = (
        "scorer.surrogate=first_order",
        "scorer.verify._target_=exact.scorers.NaiveScorer",
        "~scorer.verify.row_tokens",
    )
    with pytest.raises(ValueError, match="the hybrid verifies over the packed scorer's base pass"):
        load_pruner(*common, "scorer.surrogate=first_order", *naive)
    with pytest.raises(ConfigCompositionException, match="scorer.kk"):
        load_pruner(*common, "scorer.kk=4")


def test_shipped_surrogate_loads_for_the_embedded_model():
    surrogate, meta = load_surrogate("default", "embedded:smollm2")
    assert meta["pruner"] == "embedded:smollm2" and surrogate.config["n_features"] == 3 * 30 * 9 + 6 + 2 + 7
    assert surrogate.config["residual"] and surrogate.config["horizon"] == 4 and surrogate.calibration["table"]
    hybrid = compose_config("+experiment=demo").demo.hybrid  # its memory margins are for the demo's policy
    policy = {key: hybrid[key] for key in ("first_k", "refresh", "lookahead_refresh")}
    assert surrogate.calibration["memory"]["policy"] == policy
