"""The surrogate pipeline on a tiny model: label, train (Lightning), evaluate, and prune with the hybrid."""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from conftest import noisy_chains, tiny_llama
from exact import GreedyPruner, GreedyTrace
from exact.greedy import distinct_candidates
from exact.scorers import PackedScorer
from src.api import compose_config, load_pruner
from src.data import load_records
from src.labels import label_rows, pack_labels, read_labels
from src.run import run_task
from surrogate.calibration import check_evidence, evidence, margins_for
from surrogate.features import prior_column, token_class_table
from surrogate.groups import Group, build_groups, labelled_steps
from surrogate.hybrid import HybridScorer
from surrogate.models import Surrogate
from surrogate.policy import HybridPolicy
from surrogate.replay import remembered_lookahead, replay
from surrogate.store import load_surrogate

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
    calibration = surrogate.calibration  # the validation record's steps, its lookahead remembered if any
    assert calibration["version"] == 2 and calibration["lookahead_window"] == (6 if residual else None)
    assert len(calibration["size"]) == report["steps"]["val"] and calibration["size"].sum() == len(calibration["kept"])
    assert set(report["calibration"]) == {"0.02", "0.03", "0.05", "0.1"}  # surrogate.report_epsilons
    assert all(0 <= row["miss"] <= 1 and row["verified"] >= 1 for row in report["calibration"].values())

    evaluated = run_task(
        compose_config(
            "+experiment=eval_surrogate",
            *overrides,
            f"+evaluate.surrogates.trained={out / 'surrogate.pt'}",
            "+evaluate.surrogates.lookahead=first_order@3",
            "~evaluate.surrogates.shipped",
            "~evaluate.labels",
            f"+evaluate.labels={{held_out: [{labels}]}}",
            "evaluate.replay=[trained,lookahead]",
            f"output_dir={tmp_path / 'eval'}",
        )  # fmt: skip
    )["sets"]
    assert set(evaluated) == {"held_out"}
    evaluated = evaluated["held_out"]
    assert evaluated["records"] == 5
    policies = ("eps=0.02", "eps=0.03", "eps=0.05", "k=8")
    calibrated = {f"trained+{label}" for label in policies}
    uncalibrated = {"lookahead+k=4", "lookahead+k=8"}  # first_order@3 has no calibration: a fixed k_min
    assert set(evaluated["surrogates"]) == {"first_order", "trained", "lookahead"} | calibrated | uncalibrated
    for name in calibrated | uncalibrated:
        row = evaluated["surrogates"][name]
        assert row["verified_per_step"] >= 1 and 0 <= row["step_agreement"] <= 1
        assert ("lookahead_per_step" in row) == (name.startswith("lookahead") or residual)
    assert evaluated["surrogates"]["lookahead"]["horizon"] == 3 and evaluated["surrogates"]["trained"]["horizon"] == (
        2 if residual else 0
    )
    for name in ("first_order", "trained", "lookahead"):
        assert set(evaluated["surrogates"][name]) >= {"pearson", "spearman", "pooled_pearson", "recall@1", "recall@8"}


def test_replaying_an_unknown_surrogate_is_refused(tmp_path, tiny_model_dir, labels):
    one_set = ["~evaluate.labels", f"+evaluate.labels={{x: [{labels}]}}"]
    overrides = surrogate_overrides(tiny_model_dir, labels, tmp_path, "evaluate.replay=[missing]", *one_set)
    with pytest.raises(ValueError, match=r"evaluate.replay names \['missing'\]"):
        run_task(compose_config("+experiment=eval_surrogate", *overrides))


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
    assert surrogate.net is None and surrogate.calibration["version"] == 2


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
    with pytest.raises(ValueError, match="trained for the pruner model 'model-a', not 'model-b'"):
        load_surrogate(str(tmp_path / "s.pt"), "model-b")


def exact_and_hybrid(tokenizer, surrogate_kind="mlp", calibration=None, horizon=0, **policy):
    """The exact packed record of one chain, and the hybrid's with `policy` (and the surrogate's `calibration`),
    on one sdpa model."""
    model = tiny_llama(vocab_size=len(tokenizer))
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, surrogate_kind, hidden=8, residual=bool(horizon), horizon=horizon)
    surrogate.calibration = calibration
    question, reasoning, answer = "How many?", "12 + 30 = 42 apples in all.", "42"
    exact = GreedyPruner(model, tokenizer, scorer=PackedScorer(model, row_tokens=16, token_budget=48))
    expected = exact.prune(question, reasoning, answer, keep_fractions=[0.3], record_scores=True).record
    verify = partial(PackedScorer, row_tokens=16, token_budget=48)
    scorer = HybridScorer(model, surrogate, policy=HybridPolicy(**policy), verify=verify)
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


@pytest.mark.parametrize("horizon, window", [(0, 6), (2, 1), (2, None)])
def test_epsilon_zero_with_no_cap_is_exact_greedy(tokenizer, horizon, window):
    """ε = 0 verifies every candidate, calibrated or not, whatever the prior and its lookahead window."""
    expected, got = exact_and_hybrid(tokenizer, horizon=horizon, epsilon=0.0, lookahead_window=window)
    assert got.method == "hybrid" and got.cost["policy"]["epsilon"] == 0.0 and got.cost["margins"]["z"] == math.inf
    assert_same_greedy(got, expected)
    assert got.cost["verified_per_step"] == expected.cost["verified_per_step"]


def test_a_fixed_k_verifies_k_a_step_and_the_stale_neighbours(tokenizer):
    _, fixed = exact_and_hybrid(tokenizer, epsilon=None, k_min=3, refresh=0)
    assert set(fixed.cost["verified_per_step"]) == {3} and fixed.cost["margins"] is None
    for step, chosen in zip(fixed.step_scores, fixed.deletion_order):
        assert len({score for _, score in step}) <= 3 and chosen == max(step, key=lambda pair: pair[1])[0]
    _, refreshed = exact_and_hybrid(tokenizer, epsilon=None, k_min=3, refresh=1)
    later = refreshed.cost["verified_per_step"][1:]
    assert refreshed.cost["verified_per_step"][0] == 3 and all(3 <= v <= 5 for v in later) and max(later) > 3


def test_an_uncalibrated_surrogate_runs_a_fixed_k_and_says_so(tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="surrogate.hybrid"):
        _, got = exact_and_hybrid(tokenizer, epsilon=0.05, k_min=2, refresh=0)
    assert "has no calibration" in caplog.text and "fixed k = 2" in caplog.text
    assert got.cost["policy"]["epsilon"] is None and got.cost["calibrated"] is False
    assert set(got.cost["verified_per_step"]) == {2}


def test_a_resumed_hybrid_run_equals_an_uninterrupted_one(tokenizer):
    """What the hybrid remembers is saved with the partial trace and handed back: the same run, up to rounding."""
    model = tiny_llama(vocab_size=len(tokenizer))
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear", residual=True,
                          horizon=2)  # fmt: skip
    policy = HybridPolicy(None, k_min=2, refresh=1, lookahead_window=1)

    def pruner():
        return GreedyPruner(model, tokenizer, scorer=HybridScorer(model, surrogate, policy=policy))

    chain = ("q", "a long enough chain of thought with more words", "x")
    states = []
    whole = pruner().prune(*chain, keep_fractions=[0.5], on_state=lambda t: states.append(copy.deepcopy(t))).record
    saved = states[3]
    assert set(saved.scorer_state) == {"residual", "verified_at", "lookahead", "kept"}
    restored = GreedyTrace(**json.loads(json.dumps(asdict(saved))))  # as the run directory stores it
    resumed = pruner().prune(*chain, keep_fractions=[0.5], resume=restored).record
    assert resumed.deletion_order == whole.deletion_order
    assert resumed.cost["verified_per_step"] == whole.cost["verified_per_step"]  # the memory came back too
    assert torch.allclose(torch.tensor(resumed.step_objective), torch.tensor(whole.step_objective), atol=1e-4)


def test_a_remembered_lookahead_is_cheaper_than_one_rerun_every_step(tokenizer):
    expected, every = exact_and_hybrid(tokenizer, horizon=2, epsilon=0.0, lookahead_window=None)
    _, near = exact_and_hybrid(tokenizer, horizon=2, epsilon=0.0, lookahead_window=1)
    assert_same_greedy(near, expected)  # ε = 0: exact whatever the prior
    steps = len(near.deletion_order)
    assert near.cost["tokens_processed"] < every.cost["tokens_processed"] - steps * 3  # ≥ one candidate of 3 saved


def test_the_live_scorer_and_the_replay_make_the_same_choices_along_the_exact_path(tmp_path, tokenizer):
    """The twin test: driven along exact greedy's path, the live hybrid verifies the candidates that the replay of
    its policy (which calibrates and measures it) verifies there, and picks the same best, up to exact ties.
    Both read eager base passes: an sdpa pass moves the predictions by about 1e-4 nats, enough to tip a stop
    rule whose margins are hundredths of a nat on a random model."""
    model = tiny_llama(vocab_size=len(tokenizer), attn="eager")
    exact = GreedyPruner(model, tokenizer, scorer=PackedScorer(model))
    chains = [("How many?", "12 + 30 = 42 apples, and 42 - 2 = 40 left.", "40"), ("Sum?", "3 + 4 = 7 so 7 pens.", "7")]
    records = []
    for i, (question, reasoning, answer) in enumerate(chains):
        record = exact.prune(question, reasoning, answer, [0.4], record_scores=True, id=f"r{i}").record.to_json()
        records.append({**record, "question": question, "reasoning": reasoning, "answer": answer})
    feature_set, window = "first_order+position", 1
    classes = token_class_table(tokenizer)  # the cache keeps every block
    groups = build_groups(records, exact, tmp_path, feature_set, classes, progress=False, horizon=2)
    first_order = build_groups(records, exact, tmp_path, feature_set, classes, progress=False, horizon=0)
    torch.manual_seed(0)
    surrogate = Surrogate(groups[0].features.shape[1], "mlp", hidden=8, feature_set=feature_set, residual=True,
                          horizon=2)  # fmt: skip
    surrogate.fit_normalizer(torch.cat([g.features for g in groups]))
    seen, _ = remembered_lookahead(groups, first_order, window, prior_column(feature_set, groups[0].features.shape[1]))
    predictions = [surrogate(g.features, g.prior) for g in seen]
    surrogate.calibration = evidence(seen, predictions, window)  # calibrated on these very steps
    policy = HybridPolicy(0.1, k_min=2, round_size=1, refresh=1, lookahead_window=window)
    live = HybridScorer(model, surrogate, policy=policy)
    assert live.margins is not None and math.isfinite(live.margins.z)
    replayed = replay(seen, [surrogate(g.features, g.prior) for g in seen], live.policy, live.margins).verified

    steps = iter(zip(seen, replayed))
    for record in records:
        segments = exact.encode(record["question"], record["reasoning"], record["answer"])
        kept = torch.arange(len(segments.reasoning))
        live.start(None)
        for deleted in record["deletion_order"][: len(record["step_scores"])]:
            group, chosen = next(steps)
            candidates, _ = distinct_candidates(segments.reasoning[kept])
            scores = live.score(segments.with_kept(kept), len(segments.prompt), len(kept), candidates, kept=kept)
            finite = torch.isfinite(scores.values)
            assert set(kept[candidates[finite]].tolist()) == set(group.kept[group.candidates[chosen]].tolist())
            labels = dict(zip(group.kept.tolist(), group.labels.tolist()))
            best = int(kept[candidates[int(scores.values.argmax())]])
            assert labels[best] >= max(labels[int(group.kept[group.candidates[j]])] for j in chosen) - 1e-4
            kept = kept[kept != deleted]
    assert next(steps, None) is None


def test_changing_the_policy_of_a_loaded_surrogate_needs_no_retraining(tmp_path, tokenizer):
    """The checkpoint carries its evidence: ε, k_min and refresh change the margins when the hybrid is built."""
    model = tiny_llama(vocab_size=len(tokenizer))
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, "linear")
    surrogate.calibration = evidence(*noisy_chains(records=8), lookahead_window=None)
    surrogate.save(tmp_path / "s.pt", meta={"pruner": "tiny"})
    loaded, _ = load_surrogate(str(tmp_path / "s.pt"), "tiny", model)

    def margins(**policy):
        return HybridScorer(model, loaded, policy=HybridPolicy(**policy)).margins

    assert margins(epsilon=0.3).z < margins(epsilon=0.01).z
    assert margins(epsilon=0.1, refresh=0).spread != margins(epsilon=0.1, refresh=3).spread
    assert margins(epsilon=None) is None


def test_bench_hybrid_reports_every_method(tmp_path, tiny_model_dir):
    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear", residual=True)
    torch.manual_seed(0)
    groups = [Group("r", step, torch.zeros(9, 0), torch.zeros(9), torch.randn(9).double(), torch.arange(9))
              for step in range(6)]  # fmt: skip
    surrogate.calibration = evidence(groups, [g.labels + torch.randn(9) for g in groups], None)
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir, "kind": "linear"})
    chains = tmp_path / "chains.jsonl"
    long = "Then 4 + 4 = 8 and 8 * 2 = 16, so we have 16 pens left over."
    rows = [{"id": f"c{i}", "question": "How many?", "reasoning": r, "answer": "1"} for i, r in enumerate(REASONINGS)]
    rows.append({"id": "long", "question": "How many?", "reasoning": long, "answer": "16"})
    chains.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = tmp_path / "labels.jsonl"  # the long chain's exact run, as a labelling run writes it
    exact = load_pruner("model=hf", f"model.path={tiny_model_dir}")
    labelled = exact.prune("How many?", long, "16", [0.9, 0.7, 0.5], id="long", record_scores=True).record
    labels.write_text(json.dumps({**labelled.to_json(), "question": "How many?", "reasoning": long, "answer": "16"}))
    methods = "[{}, {policy: {epsilon: 0.0}}, {policy: {epsilon: null, k_min: 2, refresh: 0}}, "
    methods += "{policy: {epsilon: null, k_min: 1000}}, "
    methods += "{surrogate: first_order, policy: {epsilon: null, k_min: 1, refresh: 0}}, "
    methods += "{surrogate: first_order@2, policy: {epsilon: 0.0, lookahead_window: 1}}]"
    cfg = compose_config(
        "+experiment=bench_hybrid", "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={chains}",
        "data.limit=2", "data.reasoning_tokens=[5,40]", f"bench.hybrid.surrogate={tmp_path / 's.pt'}",
        f"bench.methods={methods}",
        f"bench.long.labels=[{labels}]", "bench.long.methods=['eps=0','k=2,refresh=0']",
        f"output_dir={tmp_path / 'out'}", "runtime.progress=false", "logger=none",
    )  # fmt: skip
    report = run_task(cfg)
    assert json.loads((tmp_path / "out" / "bench_hybrid.json").read_text()) == report
    assert (tmp_path / "out" / "dial.png").stat().st_size > 0
    methods = report["methods"]
    every = ("eps=0", "k=1000", "first_order@2:eps=0,lookahead_window=1")
    assert set(methods) == {"exact_packed", "eps=0.02", "k=2,refresh=0", "first_order:k=1,refresh=0", *every}
    assert methods["exact_packed"]["speedup_wall"] == 1.0 and methods["exact_packed"]["step_agreement"] == 1.0
    assert methods["exact_packed"]["j_retention"] == 1.0
    for name in every:
        assert methods[name]["jaccard"] == {"0.9": 1.0, "0.7": 1.0, "0.5": 1.0}
        assert methods[name]["step_agreement"] == 1.0 and methods[name]["final_objective_abs_gap_nats"] < 1e-4
        assert abs(methods[name]["j_retention"] - 1.0) < 1e-3  # all of the J gap between Uniform and exact
        assert {row["jaccard"] for row in methods[name]["per_record"].values()} == {1.0}
    assert list(methods["k=2,refresh=0"]["per_record"]) == [r["id"] for r in report["records"]]
    assert methods["k=2,refresh=0"]["tokens_processed"] < methods["exact_packed"]["tokens_processed"]
    assert (
        methods["k=2,refresh=0"]["verified_per_step"] == 2
        and methods["first_order:k=1,refresh=0"]["verified_per_step"] == 1
    )
    assert methods["first_order:k=1,refresh=0"]["speedup_tokens"] > methods["k=2,refresh=0"]["speedup_tokens"]
    for row in methods.values():
        assert 0 <= row["step_agreement"] <= 1 and row["final_objective_gap_nats"] <= 1e-4
        assert row["wall_over_token_speedup"] > 0
    assert set(report["baselines"]) == {"h2o", "surprisal", "uniform"}
    assert all(row["objective_gap_nats"]["0.5"] <= 1e-4 for row in report["baselines"].values())
    long = report["long"]
    assert [r["id"] for r in long["records"]] == ["long"] and set(long["methods"]) == {
        "exact_packed",
        "eps=0",
        "k=2,refresh=0",
    }
    whole = long["methods"]["eps=0"]
    assert whole["jaccard"] == {"0.9": 1.0, "0.7": 1.0, "0.5": 1.0} and whole["step_agreement"] == 1.0
    assert abs(whole["j_retention"] - 1.0) < 1e-3 and whole["final_objective_abs_gap_nats"] < 1e-4
    assert long["methods"]["k=2,refresh=0"]["tokens_per_step"] < long["methods"]["exact_packed"]["tokens_per_step"]


def test_hybrid_pruner_from_config(tmp_path, tiny_model_dir, caplog):

    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "mlp", hidden=4)
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir})
    common = ("scorer=hybrid", "model=hf", f"model.path={tiny_model_dir}", f"scorer.surrogate={tmp_path / 's.pt'}")
    pruner = load_pruner(*common, "scorer.policy.epsilon=null", "scorer.policy.k_min=3")
    settings = pruner.scorer.settings()
    assert settings["scorer"] == "hybrid" and settings["surrogate"] == "mlp" and settings["horizon"] == 0
    assert settings["policy"] == {**HybridPolicy().to_dict(), "epsilon": None, "k_min": 3}
    assert pruner.scorer.model.config._attn_implementation == "sdpa"  # eager only inside its base passes
    assert pruner.prune("q", "one two three", "x").record.method == "hybrid"
    model_free = load_pruner(*common[:3])  # no shipped surrogate for this model: the model-free prior, said once
    assert model_free.scorer.settings()["surrogate"] == "first_order" and model_free.scorer.settings()["horizon"] == 4
    assert "no learned surrogate for" in caplog.text and "first_order@4" in caplog.text
    lookahead = load_pruner(*common[:3], "scorer.surrogate=first_order@4", "scorer.policy.refresh=0")
    assert lookahead.scorer.settings()["horizon"] == 4 and lookahead.scorer.policy.fixed  # uncalibrated
    assert lookahead.prune("q", "one two three", "x").record.cost["verified_per_step"][0] == 4
    with pytest.raises(ValueError, match="first_order@H"):
        load_pruner(*common[:3], "scorer.surrogate=first_order@x")
    with pytest.raises(ValueError, match=r"policy\.k_max"):
        load_pruner(*common, "scorer.policy.k_max=2")
    # What it cannot honour fails loudly: verification without a base pass, a misspelled key.
    naive = ("scorer.verify._target_=exact.scorers.NaiveScorer", "~scorer.verify.row_tokens")
    with pytest.raises(ValueError, match="the hybrid verifies over the packed scorer's base pass"):
        load_pruner(*common, *naive)
    with pytest.raises(ConfigCompositionException, match="scorer.policy.kk"):
        load_pruner(*common, "scorer.policy.kk=4")


def test_shipped_surrogate_loads_for_the_embedded_model():
    surrogate, meta = load_surrogate("default", "embedded:smollm2")
    assert meta["pruner"] == "embedded:smollm2" and surrogate.config["n_features"] == 3 * 30 * 9 + 6 + 2 + 7
    assert surrogate.config["residual"] and surrogate.config["horizon"] == 4
    policy = HybridPolicy()  # scorer=hybrid's (tests/test_policy.py): its lookahead window is the calibration's
    check_evidence(surrogate.calibration, policy, surrogate.config["horizon"])
    margins = margins_for(surrogate.calibration, policy)
    assert 0 < margins.z < math.inf and set(meta["calibration"]) >= {"0.02"}


def test_on_policy_labels_from_a_hybrid_run_train_a_surrogate(tmp_path, tiny_model_dir, labels):
    """A hybrid run with exact checks labels the states of its own path; packed and read back, they are groups at
    exactly those steps, encoded with their label source's prompt, and train a surrogate beside exact labels."""
    data = tmp_path / "chains.jsonl"
    rows = [{"id": f"p{i}", "question": "Sum?", "reasoning": r, "answer": str(i)} for i, r in enumerate(REASONINGS)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={data}", "logger=none")
    run_task(
        compose_config(
            "+experiment=prune",
            *common,
            "scorer=hybrid",
            "scorer.surrogate=first_order@2",
            "pruner.prune.exact_checks=3",
            "pruner.prune.keep_fractions=[0.5]",
            f"output_dir={tmp_path / 'run'}",
            "runtime.progress=false",
            "data.system_prompt=Count.",
        )  # fmt: skip
    )
    packed = tmp_path / "onpolicy.jsonl.gz"
    assert pack_labels(label_rows([tmp_path / "run" / "records.jsonl"]), packed) == 5
    prompt = {"system_prompt": "Count.", "answer_delimiter": "\n"}
    records = read_labels([packed], lambda: ({**r, "prompt": prompt} for r in load_records(str(data))))
    assert all(r["method"] == "hybrid" and len(r["exact_checks"]) == 3 and "step_scores" not in r for r in records)

    pruner = load_pruner(*common[:2], "model.attn_implementation=eager")  # the default system prompt
    classes = token_class_table(pruner.tokenizer)
    groups = build_groups(records, pruner, tmp_path / "features", RICH, classes, progress=False, horizon=2)
    assert [(g.record_id, g.step) for g in groups] == [(r["id"], c["step"]) for r in records for c in r["exact_checks"]]
    for group, check in zip(groups, [c for r in records for c in r["exact_checks"]]):
        assert group.labels.tolist() == [s for _, s in check["scores"]]
    # Features of a checked step are those of its state, however the steps before it were computed.
    last = {**records[0], "exact_checks": records[0]["exact_checks"][-1:]}
    alone = build_groups([last], pruner, tmp_path / "alone", RICH, classes, progress=False, horizon=2)[0]
    assert torch.allclose(alone.features, groups[2].features, atol=1e-3)
    assert torch.allclose(alone.prior, groups[2].prior, atol=1e-4)
    # A lookahead over the whole suffix is the exact score, under the prompt the labels were made with only.
    whole = build_groups([last], pruner, tmp_path / "whole", RICH, classes, progress=False, horizon=64)[0]
    assert torch.allclose(whole.prior, whole.labels, atol=1e-3)
    unprompted = {k: v for k, v in last.items() if k != "prompt"}
    other = build_groups([unprompted], pruner, tmp_path / "other", RICH, classes, progress=False, horizon=64)[0]
    assert not torch.allclose(other.prior, other.labels, atol=1e-3)

    out = tmp_path / "train"
    overrides = surrogate_overrides(tiny_model_dir, labels, out, f"surrogate.labels=[{labels},{packed}]")
    source = "surrogate.label_sources.gsm8k"
    overrides += [f"{source}.path={data}", f"{source}.format=records", f"{source}.system_prompt=Count."]
    report = run_task(compose_config("+experiment=train_surrogate", *overrides))
    assert report["steps"]["train"] + report["steps"]["val"] == sum(
        len(labelled_steps(r)) for r in read_labels([labels, packed], lambda: load_records(str(data)))
    )


def test_evaluating_the_default_of_a_model_without_a_shipped_surrogate_names_the_model_free_prior():
    from omegaconf import OmegaConf

    from src.tasks.eval_surrogate import evaluated

    surrogate, said = evaluated("default", OmegaConf.create({"model": {"path": "org/other-model"}}))
    assert said == {"surrogate": "first_order@4", "kind": "first_order"} and surrogate.config["horizon"] == 4
