"""Answer problems with a model and grade them: accuracy and mean generated reasoning length (Table 4).

Used for the teacher's zero-shot accuracy, the students' dev checks during training, and their test scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from src.answers import is_correct, split_output
from src.generation import Generator, chat_prompts


def grade(output: str, problem: dict[str, Any], benchmark: DictConfig, tokenizer) -> dict[str, Any]:
    """One answered problem: correct or not, and its reasoning length in `tokenizer`'s tokens.

    Without a recognisable final answer the output is wrong, and all of it counts as reasoning.
    """
    parts = split_output(output, benchmark.answer_style)
    reasoning = parts[0] if parts else output
    correct = parts is not None and is_correct(parts[1], problem["gold"], benchmark.checker, benchmark.answer_style)
    return {
        "id": problem["id"],
        "correct": bool(correct),
        "reasoning_tokens": len(tokenizer(reasoning, add_special_tokens=False)["input_ids"]),
        "output": output,
    }


def answer_problems(
    generate: Generator, tokenizer, problems: Sequence[dict[str, Any]], benchmark: DictConfig, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Greedy answers to `problems`, graded."""
    prompts = chat_prompts(tokenizer, [p["question"] for p in problems], benchmark.system_prompt)
    outputs = generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    return [grade(texts[0], problem, benchmark, tokenizer) for texts, problem in zip(outputs, problems)]


def summarize(graded: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Accuracy and mean reasoning length over graded answers."""
    n = len(graded)
    return {
        "n": n,
        "accuracy": sum(g["correct"] for g in graded) / n if n else 0.0,
        "mean_reasoning_tokens": sum(g["reasoning_tokens"] for g in graded) / n if n else 0.0,
    }
