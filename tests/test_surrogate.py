"""The surrogate pipeline on a tiny model: label, train (Lightning), evaluate, and prune with the hybrid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_llama
from exact import GreedyPruner
from exact.scorers import PackedScorer
from src.api import compose_config
from src.run import run_task
from surrogate.hybrid import HybridScorer
from surrogate.models import Surrogate
from surrogate.store import load_surrogate

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
        "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", "data.path=unused", f"surrogate.labels={labels}",
        f"surrogate.feature_cache={out / 'features'}", f"output_dir={out}", "logger=none", "runtime.progress=false",
        "surrogate.max_steps=6", "surrogate.val_every_steps=2", "surrogate.groups_per_batch=4", "surrogate.hidden=16",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("kind, feature_set", [("mlp", "attention"), ("linear", "attention+surprisal")])
def test_train_and_evaluate_a_surrogate(tmp_path, tiny_model_dir, labels, kind, feature_set):
    out = tmp_path / "train"
    overrides = surrogate_overrides(
        tiny_model_dir, labels, out, f"surrogate={kind}", f"surrogate.feature_set={feature_set}"
    )
    report = run_task(compose_config("+experiment=train_surrogate", *overrides))
    assert report["records"] == {"train": 4, "val": 1} and report["kind"] == kind
    assert report["feature_set"] == feature_set
    assert -1 <= report["val"]["pearson"] <= 1 and 0 <= report["val"]["recall@16"] <= 1
    assert list((out / "checkpoints").glob("*.ckpt")) and any((out / "features").rglob("*.pt"))

    surrogate, meta = load_surrogate(str(out / "surrogate.pt"), tiny_model_dir)
    assert meta["kind"] == kind and surrogate.config == {**surrogate.config, "kind": kind, "feature_set": feature_set}

    evaluated = run_task(
        compose_config(
            "+experiment=eval_surrogate",
            *overrides,
            f"evaluate.surrogate={out / 'surrogate.pt'}",
            f"evaluate.labels={labels}",
            f"output_dir={tmp_path / 'eval'}",
        )  # fmt: skip
    )
    assert evaluated["records"] == 5 and set(evaluated) >= {"pearson", "spearman", "recall@1", "recall@8"}


def test_checkpoint_round_trip_and_wrong_model(tmp_path):
    surrogate = Surrogate(12, "mlp", hidden=8)
    surrogate.fit_normalizer(torch.rand(50, 12))
    surrogate.save(tmp_path / "s.pt", meta={"pruner": "model-a"})
    loaded, meta = load_surrogate(str(tmp_path / "s.pt"), "model-a")
    x = torch.rand(7, 12)
    assert torch.equal(loaded(x), surrogate.eval()(x)) and meta == {"pruner": "model-a"}
    with pytest.raises(ValueError, match="trained on the attention of 'model-a', not of 'model-b'"):
        load_surrogate(str(tmp_path / "s.pt"), "model-b")


def test_hybrid_with_every_candidate_is_exact_greedy(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer), attn="eager")
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, "mlp", hidden=8)
    question, reasoning, answer = "How many?", "12 + 30 = 42 apples in all.", "42"
    exact = GreedyPruner(model, tokenizer, scorer=PackedScorer(model, row_tokens=16, token_budget=48))
    expected = exact.prune(question, reasoning, answer, keep_fractions=[0.3], record_scores=True).record
    hybrid = GreedyPruner(
        model, tokenizer, scorer=HybridScorer(model, surrogate, k=10_000, row_tokens=16, token_budget=48)
    )
    got = hybrid.prune(question, reasoning, answer, keep_fractions=[0.3], record_scores=True).record
    assert got.method == "hybrid" and got.cost["shortlist_k"] == 10_000
    assert got.deletion_order == expected.deletion_order
    assert got.step_objective == expected.step_objective and got.step_scores == expected.step_scores


def test_small_shortlists_verify_only_k_candidates(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer), attn="eager")
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear")
    pruner = GreedyPruner(model, tokenizer, scorer=HybridScorer(model, surrogate, k=3))
    record = pruner.prune("q", "a long enough chain of thought", "x", keep_fractions=[0.5], record_scores=True).record
    # three chains verified per step (a run of identical neighbours shares one chain and one score)
    assert all(len({score for _, score in step}) == 3 for step in record.step_scores)
    assert all(v is not None for v in record.step_objective)
    for step, chosen in zip(record.step_scores, record.deletion_order):
        assert chosen == max(step, key=lambda pair: pair[1])[0]


def test_bench_hybrid_reports_every_method(tmp_path, tiny_model_dir):
    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "linear")
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir, "kind": "linear"})
    chains = tmp_path / "chains.jsonl"
    rows = [{"id": f"c{i}", "question": "How many?", "reasoning": r, "answer": "1"} for i, r in enumerate(REASONINGS)]
    chains.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config(
        "+experiment=bench_hybrid", "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={chains}",
        "data.limit=2", "data.reasoning_tokens=[5,40]", f"pruner.surrogate={tmp_path / 's.pt'}", "bench.ks=[2,1000]",
        f"output_dir={tmp_path / 'out'}", "runtime.progress=false",
    )  # fmt: skip
    report = run_task(cfg)
    methods = report["methods"]
    assert set(methods) == {"exact_packed", "hybrid_k2", "hybrid_k1000", "surrogate_only"}
    assert methods["exact_packed"]["speedup_wall"] == 1.0
    assert methods["hybrid_k1000"]["jaccard"] == {"0.9": 1.0, "0.7": 1.0, "0.5": 1.0}
    assert methods["hybrid_k2"]["tokens_processed"] < methods["exact_packed"]["tokens_processed"]
    assert methods["surrogate_only"]["speedup_tokens"] > methods["hybrid_k2"]["speedup_tokens"]


def test_hybrid_pruner_from_config(tmp_path, tiny_model_dir):
    from src.api import load_pruner

    model = tiny_llama()
    surrogate = Surrogate(model.config.num_hidden_layers * model.config.num_attention_heads, "mlp", hidden=4)
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir})
    common = ("pruner=hybrid", "model=hf", f"model.path={tiny_model_dir}")
    pruner = load_pruner(*common, f"pruner.surrogate={tmp_path / 's.pt'}", "pruner.k=4")
    assert pruner.scorer.settings() == {"scorer": "hybrid", "shortlist_k": 4}
    assert pruner.scorer.model.config._attn_implementation == "eager"
    assert pruner.prune("q", "one two three", "x").record.method == "hybrid"
    assert load_pruner(*common, f"pruner.surrogate={tmp_path / 's.pt'}", "pruner.surrogate_only=true").scorer.k == 1
    with pytest.raises(ValueError, match="no shipped surrogate"):
        load_pruner(*common)


def test_shipped_surrogate_loads_for_the_embedded_model():
    surrogate, meta = load_surrogate("default", "embedded:smollm2")
    assert meta["pruner"] == "embedded:smollm2" and surrogate.config["n_features"] == 30 * 9 + 2
