"""PruneResult's table (`to_frame`) and notebook display (`_repr_html_`) on tiny random models."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from conftest import tiny_llama
from exact import GreedyPruner
from src.baselines.token_rankings import UniformPruner

QUESTION = "Ann has 3 pens and buys 4. How many?"
REASONING = "3 + 4 = 7 pens."
ANSWER = '{"answer": 7}'


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(vocab_size=len(tokenizer))


def test_frame_has_a_row_per_token_with_its_step_and_the_objective_after_it(model, tokenizer):
    pruner = GreedyPruner(model, tokenizer)
    result = pruner.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5])
    n, order = len(REASONING), result.deletion_order
    frame = result.to_frame()
    assert list(frame.columns) == ["position", "token", "deletion_step", "category", "objective_after"]
    assert frame["position"].tolist() == list(range(n)) and "".join(frame["token"]) == REASONING
    for s, unit in enumerate(order, start=1):
        assert frame.loc[unit, "deletion_step"] == s
    never = sorted(set(range(n)) - set(order))
    assert never and frame.loc[never, "deletion_step"].isna().all()
    assert frame.loc[never, "objective_after"].isna().all() and frame["category"].isna().all()
    # objective_after is J of the chain left after that many deletions, recomputed from scratch here
    for s in (1, len(order)):
        gone = set(order[:s])
        left = "".join(t for i, t in enumerate(result.tokens) if i not in gone)
        fresh = pruner.prune(QUESTION, left, ANSWER, keep_fractions=[1.0], max_deletions=0).record.step_objective
        assert frame.loc[order[s - 1], "objective_after"] == pytest.approx(fresh[0], abs=1e-3)
    labels = [f"c{i}" for i in range(n)]
    assert result.to_frame(labels)["category"].tolist() == labels
    with pytest.raises(ValueError, match="categories for"):
        result.to_frame(labels[:-1])


def test_frame_leaves_unevaluated_objectives_missing(model, tokenizer):
    two = GreedyPruner(model, tokenizer, per_step=3).prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5])
    frame = two.to_frame().set_index("deletion_step")
    steps = two.record.step_objective
    assert None in steps
    for s in range(1, len(steps)):
        assert math.isnan(frame.loc[s, "objective_after"]) == (steps[s] is None)

    baseline = UniformPruner(model, tokenizer).prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5])
    assert baseline.record.step_objective == []
    frame = baseline.to_frame()
    assert sorted(frame["deletion_step"]) == list(range(1, len(REASONING) + 1))
    assert frame["objective_after"].isna().all() and frame["objective_after"].dtype == float
    assert isinstance(frame["deletion_step"].dtype, pd.Int64Dtype)


def blocks(page: str) -> list[tuple[str, int]]:
    """(title, struck-through token count) of each block of a rendered result."""
    found = re.findall(r"<div><strong>(.*?)</strong><pre[^>]*>(.*?)</pre></div>", page, flags=re.S)
    return [(title, body.count("line-through")) for title, body in found]


def test_html_shows_every_keep_fraction(model, tokenizer):
    pruner = GreedyPruner(model, tokenizer)
    n = len(REASONING)
    result = pruner.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5, 0.9])
    assert blocks(result._repr_html_()) == [
        (f"keep 0.9 · {n * 9 // 10}/{n} tokens", n - n * 9 // 10),
        (f"keep 0.5 · {n // 2}/{n} tokens", n - n // 2),
    ]
    to_end = pruner.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5], prune_to_end=True)
    assert [title for title, _ in blocks(to_end._repr_html_())] == [f"keep 0.5 · {n // 2}/{n} tokens"]
    early = pruner.prune(QUESTION, REASONING, ANSWER, keep_fractions=[0.5], max_deletions=1)
    assert early.record.pruned == {} and blocks(early._repr_html_()) == [("no keep fraction reached", 0)]
