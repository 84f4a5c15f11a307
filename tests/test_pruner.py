"""The GreedyPruner API and the output record schema."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_llama
from exact import GreedyPruner, InvalidInstance, NaiveScorer, PackedScorer, PruneRecord
from exact.record import SCHEMA_FIELDS
from src.pruning import record_metrics

QUESTION = "Ann has 3 pens and buys 4. How many?"
REASONING = "3 + 4 = 7 pens."
ANSWER = '{"answer": 7}'


@pytest.fixture
def pruner(tokenizer):
    return GreedyPruner(tiny_llama(vocab_size=len(tokenizer)), tokenizer, system_prompt="Solve it.", model_name="tiny")


def test_record_schema(pruner):
    result = pruner.prune(
        QUESTION,
        REASONING,
        ANSWER,
        keep_fractions=[0.9, 0.5],
        record_scores=True,
        exact_checks=2,
        id="r1",
        extra={"gold": "7", "meta": {"src": "t"}},
    )
    row = json.loads(json.dumps(result.record.to_json()))
    assert set(SCHEMA_FIELDS) <= set(row)
    n = len(REASONING)  # one token per character
    assert row["id"] == "r1" and row["method"] == "greedy" and row["objective"] == "joint" and row["pruner"] == "tiny"
    assert row["n_reasoning_tokens"] == n and "".join(row["reasoning_tokens"]) == REASONING
    deletions = n - n // 2
    assert len(row["deletion_order"]) == deletions == len(set(row["deletion_order"]))
    assert all(0 <= i < n for i in row["deletion_order"])
    assert len(row["step_objective"]) == len(row["step_perplexity"]) == deletions + 1
    assert set(row["pruned"]) == {"0.9", "0.5"} and len(row["pruned"]["0.5"]) == n // 2
    assert [len(s) for s in row["step_scores"]] == list(range(n, n - deletions, -1))
    assert [c["scores"] for c in row["exact_checks"]] == [row["step_scores"][c["step"]] for c in row["exact_checks"]]
    metrics = record_metrics(row)  # exact greedy checked against itself: every choice is exact's
    assert metrics["record/check_hit_rate"] == 1.0 and metrics["record/check_regret_nats"] == 0.0
    counters = {"wall_s", "tokens_processed", "forward_passes", "verified_per_step"}
    assert set(row["cost"]) == {"scorer", "per_step", *counters}
    assert (
        row["cost"]["verified_per_step"][0]
        == row["n_reasoning_tokens"]
        - sum(  # exact: every distinct chain
            a == b for a, b in zip(row["reasoning_tokens"], row["reasoning_tokens"][1:])
        )
    )
    assert row["gold"] == "7" and row["meta"] == {"src": "t"} and row["question"] == QUESTION
    assert PruneRecord.from_json(row).to_json() == row


def test_result_renders_any_keep_fraction(pruner):
    result = pruner.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5], prune_to_end=True)
    assert len(result.deletion_order) == len(REASONING)
    assert result.at(1.0) == REASONING
    assert result.at(0.5) == result.record.pruned["0.5"]
    shown = result.show(0.5, mark=lambda t: "_")
    assert shown.replace("_", "") == result.at(0.5) and len(shown) == len(REASONING)
    assert "line-through" in result._repr_html_()


def test_html_is_escaped(tokenizer):
    pruner = GreedyPruner(tiny_llama(vocab_size=len(tokenizer)), tokenizer)
    result = pruner.prune("q", "<b>& é</b>", "a", keep_fractions=[0.5])
    page = result._repr_html_()
    assert "<b>" not in page and "&lt;" in page and "&amp;" in page and " & " not in page


def test_answer_objective_and_naive_scorer_agree(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer))
    orders = [
        GreedyPruner(model, tokenizer, objective="answer", scorer=s).prune(QUESTION, REASONING, ANSWER).deletion_order
        for s in (NaiveScorer, PackedScorer)
    ]
    assert orders[0] == orders[1]


def test_invalid_instances(pruner, tokenizer):
    with pytest.raises(InvalidInstance, match="empty"):
        pruner.prune(QUESTION, "", ANSWER)
    short = GreedyPruner(pruner.scorer.model, tokenizer, max_reasoning_tokens=5)
    with pytest.raises(InvalidInstance, match="15 tokens, more than max_reasoning_tokens=5"):
        short.prune(QUESTION, REASONING, ANSWER)
    with pytest.raises(ValueError, match="keep fraction"):
        pruner.prune(QUESTION, REASONING, ANSWER, keep_fractions=[1.5])


def test_from_pretrained_builds_any_scorer_with_its_options(tiny_model_dir):
    from src.api import GreedyPruner
    from surrogate.hybrid import HybridScorer

    exact = GreedyPruner.from_pretrained(tiny_model_dir, objective="answer", token_budget=64)
    assert isinstance(exact.scorer, PackedScorer) and exact.scorer.budget.token_budget == 64
    assert exact.scorer.objective_name == "answer" and exact.model_name == tiny_model_dir
    policy = {"epsilon": None, "k_min": 2, "refresh": 0}
    hybrid = GreedyPruner.from_pretrained(tiny_model_dir, scorer=HybridScorer, surrogate="first_order", policy=policy)
    record = hybrid.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.7]).record
    assert record.method == "hybrid" and set(record.cost["verified_per_step"]) == {2}
    frame = hybrid.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.7]).to_frame()
    assert list(frame["token"]) == record.reasoning_tokens
