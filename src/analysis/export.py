"""Export to the paper's demo format: the page `docs/index.html` of iamjanvijay/greedy-token-pruner, and its
`docs/reader.py`.

One JSON line per record: `id`, `question`, `user_prompt` and `reason_tokens_json`.

- `user_prompt` is QUESTION_MARKER + question + REASON_MARKER + reasoning + ANSWER_MARKER + answer +
  END_MARKER. The page (`getQuestionReasonAnswer`) and reader.py (`get_question_reason_answer`) recover the
  three parts by splitting on the markers in turn, each time taking the piece after the marker's first
  occurrence, so a part that holds a marker would be cut (ValueError here). Neither reads anything after
  END_MARKER, so the prompt ends with it. Without the markers the page stops with "Cannot read properties of
  undefined (reading 'split')".
- `reason_tokens_json` is a list of `{token_position, token_text, deleted_step, category}`, one per
  reasoning unit in reading order. `category` is a paper key (SYMBOLIC_MATH, FUNCTION, ENTITY_NAME,
  META_DISCOURSE, VERBAL_MATH, COREFERENCE). `deleted_step` is the unit's place in the deletion order,
  1 for the first deleted. The page's slider runs from 0 to the largest `deleted_step` and greys the tokens
  with `deleted_step <= slider`, so slider position s shows the chain after s deletions. A unit never
  deleted gets `len(deletion_order) + 1`: it stays at every position 0…len(deletion_order), and only the
  slider's extra last position greys it (with everything else). A record pruned to the end has no such unit
  and no extra position.
"""

from __future__ import annotations

from typing import Any

from src.analysis.categories import PAPER_KEYS

QUESTION_MARKER = "--------------------------------------------------\n\nQuestion:\n"
REASON_MARKER = "\n\nOutput Reason:\n"
ANSWER_MARKER = "\nOutput Answer:\n"
END_MARKER = "\n\nOutput Reason Tokens (JSON Format)"


def user_prompt(question: str, reasoning: str, answer: str) -> str:
    """The demo's `user_prompt`: the three parts between the page's markers."""
    return f"{QUESTION_MARKER}{question}{REASON_MARKER}{reasoning}{ANSWER_MARKER}{answer}{END_MARKER}"


def read_user_prompt(prompt: str) -> tuple[str, str, str] | None:
    """(question, reasoning, answer) as the page and reader.py split `prompt`; None where they would fail."""
    try:
        after_question = prompt.split(QUESTION_MARKER)[1]
        question, after_reason = after_question.split(REASON_MARKER)[:2]
        reasoning, after_answer = after_reason.split(ANSWER_MARKER)[:2]
    except (IndexError, ValueError):
        return None
    return question, reasoning, after_answer.split(END_MARKER)[0]


def demo_record(record: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """One pruning record (flat JSON, with its input's question, reasoning and answer) in the demo's shape."""
    missing = [key for key in ("question", "reasoning", "answer") if not isinstance(record.get(key), str)]
    if missing:
        raise ValueError(f"record {record['id']!r}: the demo export needs its {', '.join(missing)} (a string)")
    tokens = record["reasoning_tokens"]
    if len(categories) != len(tokens):
        raise ValueError(f"record {record['id']!r}: {len(categories)} categories for {len(tokens)} reasoning units")
    parts = (record["question"], record["reasoning"], record["answer"])
    prompt = user_prompt(*parts)
    if read_user_prompt(prompt) != parts:
        raise ValueError(
            f"record {record['id']!r}: its question, reasoning or answer contains one of the demo page's markers "
            f"{[QUESTION_MARKER, REASON_MARKER, ANSWER_MARKER, END_MARKER]}, which would cut it"
        )
    order = record["deletion_order"]
    step = {unit: s for s, unit in enumerate(order, start=1)}
    never = len(order) + 1
    return {
        "id": record["id"],
        "question": record["question"],
        "user_prompt": prompt,
        "reason_tokens_json": [
            {"token_position": i, "token_text": text, "deleted_step": step.get(i, never), "category": PAPER_KEYS[c]}
            for i, (text, c) in enumerate(zip(tokens, categories))
        ],
    }
