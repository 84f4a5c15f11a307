"""Benchmark problems with gold answers, and the paper's train/dev/test splits (App. B.1).

A problem is `{id, question, gold, dataset}` plus an optional `meta` dict; `question` is the whole
user message (for MMLU-Pro, the question and its lettered options). Rows come from GSM8K, MATH
(or MATH-500) and MMLU-Pro JSONL files, or from the hub with the [hub] extra. As in src/data.py,
a bad row becomes a `BadInput` naming its file and line, and reading goes on.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.data import BadInput, gsm8k_id, math_gold, math_id, source_rows, split_gsm8k

FORMATS = ("gsm8k", "math", "mmlu_pro")
LETTERS = "ABCDEFGHIJ"
log = logging.getLogger(__name__)


def _text(row: dict[str, Any], key: str, where: str) -> str | BadInput:
    """`row[key]` if it is a non-empty string, else BadInput."""
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        return BadInput(where, f"needs a non-empty string field {key!r}")
    return value


def gsm8k_problem(row: dict[str, Any], rid: str, where: str, dataset: str = "gsm8k") -> dict[str, Any] | BadInput:
    """A GSM8K row {question, answer: "solution\\n#### N"}: gold N without commas; meta holds the solution."""
    question, answer = _text(row, "question", where), _text(row, "answer", where)
    for field in (question, answer):
        if isinstance(field, BadInput):
            return field
    parsed = split_gsm8k(answer)
    if parsed is None:
        return BadInput(where, "GSM8K answer has no final '#### N' line")
    solution, gold = parsed
    return {"id": rid, "question": question, "gold": gold, "dataset": dataset, "meta": {"solution": solution}}


def math_problem(row: dict[str, Any], rid: str, where: str, dataset: str = "math") -> dict[str, Any] | BadInput:
    """A MATH row {problem, solution[, answer], ...}: gold is `answer` (MATH-500) or the last \\boxed{} of the solution.

    The id is the row's `unique_id` (e.g. train/algebra/0.json) when it has one, else `rid`.
    """
    question, solution = _text(row, "problem", where), _text(row, "solution", where)
    for field in (question, solution):
        if isinstance(field, BadInput):
            return field
    gold = math_gold(row, solution)
    if gold is None:
        return BadInput(where, "MATH solution has no non-empty \\boxed{...} and the row no 'answer' field")
    meta = {"solution": solution, "level": row.get("level"), "subject": row.get("subject", row.get("type"))}
    unique_id = row.get("unique_id")
    return {
        "id": unique_id if isinstance(unique_id, str) and unique_id else rid,
        "question": question,
        "gold": gold,
        "dataset": dataset,
        "meta": {k: v for k, v in meta.items() if v is not None},
    }


def mmlu_pro_problem(row: dict[str, Any], where: str, dataset: str = "mmlu_pro") -> dict[str, Any] | BadInput:
    """An MMLU-Pro row {question_id, question, options, answer, ...}: the options lettered A., B., ... one a line."""
    question = _text(row, "question", where)
    if isinstance(question, BadInput):
        return question
    qid, options, answer = row.get("question_id"), row.get("options"), row.get("answer")
    if not isinstance(qid, int) or isinstance(qid, bool):
        return BadInput(where, "needs an integer field 'question_id'")
    if not isinstance(options, list) or not 0 < len(options) <= len(LETTERS):
        return BadInput(where, f"needs a field 'options' with 1 to {len(LETTERS)} options")
    if not all(isinstance(option, str) for option in options):
        return BadInput(where, "every option must be a string")
    if not isinstance(answer, str) or answer not in LETTERS[: len(options)]:
        return BadInput(where, f"answer {answer!r} is not one of the letters A–{LETTERS[len(options) - 1]}")
    lines = [question] + [f"{letter}. {option}" for letter, option in zip(LETTERS, options)]
    meta = {key: row[key] for key in ("category", "src") if key in row}
    return {"id": f"mmlu_pro-{qid}", "question": "\n".join(lines), "gold": answer, "dataset": dataset, "meta": meta}


def read_problems(
    path: str, format: str, split: str, dataset: str | None = None
) -> Iterator[dict[str, Any] | BadInput]:
    """Problems (or BadInput) from `path` in file order; `format` is gsm8k, math or mmlu_pro.

    `split` is the hub split to load when `path` is a hub id; it also names MATH ids of rows without a
    `unique_id` (`math-test-3`). GSM8K ids are `gsm8k_id(path, row)`. `dataset` defaults to `format`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown benchmark format {format!r}; expected one of {FORMATS}")
    dataset = dataset or format
    for index, (where, row) in enumerate(source_rows(path, split, "main" if format == "gsm8k" else None)):
        if isinstance(row, BadInput):
            yield row
        elif format == "gsm8k":
            yield gsm8k_problem(row, gsm8k_id(path, index), where, dataset)
        elif format == "math":
            yield math_problem(row, math_id(split, index), where, dataset)
        else:
            yield mmlu_pro_problem(row, where, dataset)


def make_splits(problems: list[dict], sizes: dict[str, int | None], seed: int) -> dict[str, list[dict]]:
    """Disjoint splits of `problems` with exactly `sizes` (one split may be None: the rest), in `sizes` order.

    Deterministic for a seed: problems are sorted by id, shuffled with random.Random(seed), and the
    sized splits are cut from the front in `sizes` order; the rest goes to the None split (or nowhere).
    """
    rest = [name for name, size in sizes.items() if size is None]
    if len(rest) > 1:
        raise ValueError(f"only one split can take the rest (size null), got {rest}")
    if any(size is not None and size < 0 for size in sizes.values()):
        raise ValueError(f"split sizes must not be negative: {sizes}")
    needed = sum(size for size in sizes.values() if size is not None)
    if needed > len(problems):
        raise ValueError(f"splits {sizes} need {needed} problems, but the pool has only {len(problems)}")
    repeated = [rid for rid, count in Counter(p["id"] for p in problems).items() if count > 1]
    if repeated:
        raise ValueError(f"problem ids must be unique to split them, but {repeated[:3]} repeat")
    order = sorted(problems, key=lambda p: p["id"])
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for name, size in sizes.items():
        if size is not None:
            splits[name], start = order[start : start + size], start + size
    if rest:
        splits[rest[0]] = order[start:]
    return {name: splits[name] for name in sizes}


def _good(items: Iterator[dict[str, Any] | BadInput]) -> list[dict[str, Any]]:
    """The problems; each BadInput is logged and skipped."""
    problems = []
    for item in items:
        if isinstance(item, BadInput):
            log.warning("skipped %s", item)
        else:
            problems.append(item)
    return problems


def load_benchmark(cfg: DictConfig | dict) -> dict[str, list[dict]]:
    """{train, dev, test} problems for a `benchmark` config (conf/benchmark/NAME.yaml).

    The splits are drawn from `files.pool` with `make_splits(pool, splits, seed)`; when `files.test`
    is set, the test split is that whole file instead (in file order) and `splits.test` must be null.
    Then `limit` keeps the first N problems of each split.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    fmt, files, sizes = cfg["format"], cfg["files"], dict(cfg["splits"])
    name = cfg.get("name") or fmt
    source = {"pool": "train", "test": "test", **(cfg.get("source_split") or {})}
    pool = _good(read_problems(files["pool"], fmt, source["pool"], name))
    test_file = files.get("test")
    if test_file and sizes.pop("test", None) is not None:
        raise ValueError("splits.test must be null when files.test is set (use limit.test to take its first N)")
    splits = make_splits(pool, sizes, cfg["seed"])
    if test_file:
        splits["test"] = _good(read_problems(test_file, fmt, source["test"], name))
    limits = cfg.get("limit") or {}
    return {split: items[: limits.get(split)] for split, items in splits.items()}
