"""The demo export read back the way the paper's demo page reads it.

The reference is iamjanvijay/greedy-token-pruner: `docs/index.html` (functions `getQuestionReasonAnswer`,
`loadData`, `loadExample`, `renderTokens`) and `docs/reader.py` (`get_question_reason_answer`, the same splits).
The functions below port that code to Python; they do not use src.analysis.export.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_llama
from exact import GreedyPruner
from src.analysis.categories import PAPER_KEYS
from src.analysis.export import demo_record
from src.api import compose_config
from src.run import run_task

# The four markers, as written in both getQuestionReasonAnswer and get_question_reason_answer.
QUESTION_BEGIN = "--------------------------------------------------\n\nQuestion:\n"
REASON_BEGIN = "\n\nOutput Reason:\n"
ANSWER_BEGIN = "\nOutput Answer:\n"
ANSWER_END = "\n\nOutput Reason Tokens (JSON Format)"


def second(pieces: list[str]) -> str:
    """JavaScript's `pieces[1]`, whose `.split` the page calls next: undefined has none."""
    if len(pieces) < 2:
        raise TypeError("Cannot read properties of undefined (reading 'split')")
    return pieces[1]


def page_question_reason_answer(user_prompt: str) -> tuple[str, str, str]:
    """getQuestionReasonAnswer (index.html) = get_question_reason_answer (reader.py)."""
    split_1 = second(user_prompt.split(QUESTION_BEGIN))
    question = split_1.split(REASON_BEGIN)[0]
    split_2 = second(split_1.split(REASON_BEGIN))
    reason = split_2.split(ANSWER_BEGIN)[0]
    split_3 = second(split_2.split(ANSWER_BEGIN))
    answer = split_3.split(ANSWER_END)[0]
    return question, reason, answer


def page_rows(text: str) -> list[dict]:
    """loadData: `text.trim().split('\\n').filter(line => line.trim()).map(JSON.parse)`."""
    return [json.loads(line) for line in text.strip().split("\n") if line.strip()]


def page_slider_max(row: dict) -> int:
    """loadExample: the slider runs from 0 to `Math.max(...deleted_step)`."""
    return max(t["deleted_step"] for t in row["reason_tokens_json"])


def page_greyed(row: dict, step: int) -> set[int]:
    """renderTokens: a token is shown deleted when `token.deleted_step <= pruningStep`."""
    return {t["token_position"] for t in row["reason_tokens_json"] if t["deleted_step"] <= step}


def test_the_old_export_reproduces_the_pages_error():
    with pytest.raises(TypeError, match=r"reading 'split'"):
        page_question_reason_answer("What is 2 + 2?")  # user_prompt was the bare question


@pytest.fixture(scope="module")
def records(tokenizer) -> list[dict]:
    """Two real pruning records: one pruned to keep 0.5 (some tokens never deleted), one to the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, more contend with other CPU load
    try:
        pruner = GreedyPruner(tiny_llama(vocab_size=len(tokenizer)), tokenizer)
        question = "Ann has 3 pens.\n\nShe buys 4 more. How many?"
        half = pruner.prune(question, "3 + 4 = 7.\nSo 7 pens.", "7", keep_fractions=[0.5], id="half")
        whole = pruner.prune(question, "3 + 4 = 7, é.", "7", keep_fractions=[0.5], prune_to_end=True, id="whole")
    finally:
        torch.set_num_threads(threads)
    return [half.record.to_json(), whole.record.to_json()]


def test_export_round_trips_through_the_pages_parsing(tmp_path, records):
    source = tmp_path / "records.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    run_task(
        compose_config(
            "+experiment=export_demo", f"analysis.runs={{greedy: {source}}}", f"output_dir={tmp_path}", "logger=none"
        )
    )
    rows = page_rows((tmp_path / "demo-greedy.jsonl").read_text(encoding="utf-8"))
    assert [row["id"] for row in rows] == ["half", "whole"]
    kept_to_the_end = []
    for record, row in zip(records, rows):
        parts = (record["question"], record["reasoning"], record["answer"])
        assert page_question_reason_answer(row["user_prompt"]) == parts and row["question"] == record["question"]
        question, reasoning, answer = parts  # the paper's prompt ends where the page stops reading
        assert (
            row["user_prompt"]
            == f"{QUESTION_BEGIN}{question}{REASON_BEGIN}{reasoning}{ANSWER_BEGIN}{answer}{ANSWER_END}"
        )
        tokens = sorted(row["reason_tokens_json"], key=lambda t: t["token_position"])
        assert [t["token_text"] for t in tokens] == record["reasoning_tokens"]
        assert {t["category"] for t in tokens} <= set(PAPER_KEYS.values())
        order = record["deletion_order"]
        for step in range(len(order) + 1):  # every slider position a deletion reaches
            assert page_greyed(row, step) == set(order[:step])
        never = set(range(record["n_reasoning_tokens"])) - set(order)
        assert page_slider_max(row) == len(order) + (1 if never else 0)
        kept_to_the_end.append(bool(never))
    assert kept_to_the_end == [True, False]


def record(**fields) -> dict:
    tokens = ["3", " +", " 4", " =", " 7"]
    base = {"id": "r", "reasoning_tokens": tokens, "deletion_order": [3, 0], "question": "Q?", "answer": "7"}
    return {**base, "reasoning": "".join(tokens), **fields}


CATEGORIES = ["SymbMath", "Grammar", "SymbMath", "CoRef", "EntName"]


def test_deleted_steps_count_from_one_and_never_deleted_tokens_come_after_the_last():
    row = demo_record(record(), CATEGORIES)
    assert [t["deleted_step"] for t in row["reason_tokens_json"]] == [2, 3, 3, 1, 3]
    assert [t["category"] for t in row["reason_tokens_json"]][:2] == ["SYMBOLIC_MATH", "FUNCTION"]
    assert [
        t["deleted_step"] for t in demo_record(record(deletion_order=[4, 2, 0, 1, 3]), CATEGORIES)["reason_tokens_json"]
    ] == [3, 4, 2, 5, 1]


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"reasoning": "3 + 4\nOutput Answer:\n= 7"}, "markers"),
        ({"question": "Why?\n\nOutput Reason:"}, "markers"),  # cut by the marker it runs into
        ({"answer": None}, "needs its answer"),
    ],
)
def test_parts_the_page_would_misread_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        demo_record(record(**fields), CATEGORIES)


def test_one_category_per_unit():
    with pytest.raises(ValueError, match="4 categories for 5"):
        demo_record(record(), CATEGORIES[:4])
