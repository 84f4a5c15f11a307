"""Instances to prune: `{id, question, reasoning, answer}` records from JSONL, GSM8K rows, or the hub.

Reading never stops at a bad line. Each problem becomes a `BadInput` that names the file and line
(or the record id) and what is wrong, and the caller reports it and moves on.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

REQUIRED = ("question", "reasoning", "answer")
EMBEDDED = ("demo", "easy")  # word problems written for this project, shipped in src/data/
_CALCULATOR = re.compile(r"<<[^<>]*>>")


@dataclass
class BadInput:
    """An input that cannot be pruned: where it is, and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class Record(dict):
    """A checked `{id, question, reasoning, answer, ...}` record (a dict of its fields) that also knows
    `where` it was read (file and line, or hub row), so a later check such as for repeated ids can name it."""

    def __init__(self, fields: dict[str, Any], where: str):
        super().__init__(fields)
        self.where = where


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | BadInput]]:
    """(line number, object) for each non-blank line of a UTF-8 JSONL file, with or without a byte-order
    mark (gzipped when it ends in .gz); undecodable or non-object lines become BadInput."""
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield lineno, BadInput(where, f"not valid UTF-8 ({err.reason} at byte {err.start})")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                yield lineno, BadInput(where, f"not valid JSON ({err.msg}, column {err.colno})")
                continue
            if not isinstance(obj, dict):
                yield lineno, BadInput(where, f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield lineno, obj


def check_record(obj: dict[str, Any], where: str) -> Record | BadInput:
    """The record read at `where`, with a string id, or BadInput naming the missing, mistyped or empty field.

    An empty answer is bad input: the Answer objective, log p(answer), means nothing on it.
    """
    rid = obj.get("id")
    place = f"record {rid!r} ({where})" if rid is not None else where
    for key in REQUIRED:
        if key not in obj:
            return BadInput(place, f"missing field {key!r}")
        if not isinstance(obj[key], str):
            return BadInput(place, f"field {key!r} must be a string, got {type(obj[key]).__name__}")
    for key in ("reasoning", "answer"):
        if not obj[key].strip():
            return BadInput(place, f"empty {key}")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        return BadInput(place, "missing or non-string field 'id'")
    return Record({**obj, "id": str(rid)}, where)


def split_gsm8k(answer: str) -> tuple[str, str] | None:
    """A GSM8K answer "solution\\n#### N" as (solution, gold N without thousands separators), or None.

    `#### 1,000` gives "1000": the gold is a JSON number wherever it is used (answer templates, grading).
    """
    solution, sep, final = answer.rpartition("####")
    gold = final.strip().replace(",", "")
    return (solution.strip(), gold) if sep and gold else None


def gsm8k_record(
    row: dict[str, Any], rid: str, answer_template: str, where: str, dataset: str = "gsm8k"
) -> dict[str, Any] | BadInput:
    """A GSM8K row {question, answer: "solution\\n#### N"} as a record; calculator <<…>> notes removed."""
    if not isinstance(row.get("answer"), str):
        return BadInput(where, "GSM8K row needs a string field 'answer'")
    parsed = split_gsm8k(row["answer"])
    if parsed is None:
        return BadInput(where, "GSM8K answer has no final '#### N' line")
    solution, gold = parsed
    return {
        "id": rid,
        "question": row.get("question"),
        "reasoning": _CALCULATOR.sub("", solution).strip(),
        "answer": answer_template.replace("{answer}", gold),
        "gold": gold,
        "dataset": dataset,
    }


def source_rows(
    path: str, split: str = "test", config: str | None = None
) -> Iterator[tuple[str, dict[str, Any] | BadInput]]:
    """(location, row) from an embedded set (`demo`, `easy`), a local JSONL file, or a hub dataset."""
    if path in EMBEDDED:
        source = resources.files("src") / "data" / f"{path}.jsonl"
        with resources.as_file(source) as local:
            for lineno, row in read_jsonl(local):
                yield f"{path}.jsonl:{lineno}", row
        return
    if Path(path).exists():
        for lineno, row in read_jsonl(path):
            yield f"{path}:{lineno}", row
        return
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(
            f"{path} is not a local file; to read a hub dataset, install the [hub] extra (datasets)"
        ) from None
    for index, row in enumerate(datasets.load_dataset(path, config, split=split)):
        yield f"{path}[{split}]:{index}", dict(row)


def gsm8k_id(path: str, index: int) -> str:
    """The id of GSM8K row `index` (from 0) of `path`: `{file stem}-{index}`, e.g. `test-17`, on every path
    (pruning, teacher sampling), so a chain keeps its id from teacher to pruner."""
    return f"{Path(path).stem}-{index}"


def load_records(
    path: str,
    format: str = "records",
    split: str = "test",
    answer_template: str = "{answer}",
    id_prefix: str | None = None,
    name: str = "gsm8k",
) -> Iterator[Record | BadInput]:
    """Records (each with its `where`) or BadInput from `path`, in file order; `format` is `records` or `gsm8k`.

    GSM8K rows get the id `{id_prefix}{row number}` (default prefix: the file's stem) and `dataset=name`.
    """
    if format not in ("records", "gsm8k"):
        raise ValueError(f"unknown data format {format!r}; expected 'records' or 'gsm8k'")
    config = "main" if "gsm8k" in path.lower() else None
    for count, (where, row) in enumerate(source_rows(path, split, config)):
        if isinstance(row, BadInput):
            yield row
            continue
        if format == "gsm8k":
            rid = gsm8k_id(path, count) if id_prefix is None else f"{id_prefix}{count}"
            row = gsm8k_record(row, rid, answer_template, where, name)
        yield row if isinstance(row, BadInput) else check_record(row, where)


def select(
    items: Iterable[dict[str, Any] | BadInput],
    n_tokens: Callable[[dict[str, Any]], int],
    window: Sequence[int] | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any] | BadInput]:
    """The first `limit` records whose reasoning length (`n_tokens`) lies in `window` = [min, max].

    BadInput passes through for the caller to report.
    """
    taken = 0
    for item in items:
        if limit is not None and taken >= limit:
            return
        if not isinstance(item, BadInput) and window is not None:
            if not window[0] <= n_tokens(item) <= window[1]:
                continue
        taken += not isinstance(item, BadInput)
        yield item
