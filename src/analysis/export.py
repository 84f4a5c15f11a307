"""Export to the paper's demo format (iamjanvijay/greedy-token-pruner's demo page).

One JSON line per record: `question`, `user_prompt`, and `reason_tokens_json`, a list of
`{token_position, token_text, deleted_step, category}` where `deleted_step` runs 1…n in deletion order
and 0 means never deleted, and `category` is a paper key (SYMBOLIC_MATH, FUNCTION, ENTITY_NAME,
META_DISCOURSE, VERBAL_MATH, COREFERENCE).
"""

from __future__ import annotations

from typing import Any

from src.analysis.categories import PAPER_KEYS


def demo_record(record: dict[str, Any], categories: list[str], user_prompt: str | None = None) -> dict[str, Any]:
    """One record in the demo's shape; `user_prompt` defaults to the question."""
    step = {unit: s for s, unit in enumerate(record["deletion_order"], start=1)}
    return {
        "id": record["id"],
        "question": record.get("question", ""),
        "user_prompt": user_prompt if user_prompt is not None else record.get("question", ""),
        "reason_tokens_json": [
            {"token_position": i, "token_text": text, "deleted_step": step.get(i, 0), "category": PAPER_KEYS[category]}
            for i, (text, category) in enumerate(zip(record["reasoning_tokens"], categories))
        ],
    }
