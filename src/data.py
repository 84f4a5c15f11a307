"""Instances to prune: `{id, question, reasoning, answer}` records from JSONL, GSM8K or MATH rows, or the hub.

Reading never stops at a bad line. Each problem becomes a `BadInput` that names the record's id (when
one can be read), its file and line, and what is wrong; the caller reports it and moves on. An
unexpected exception while one line is read or checked is that line's failure (src/errors.py).
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import json_repair

from src.answers import last_boxed, unbox
from src.errors import ends_job

REQUIRED = ("question", "reasoning", "answer")
FORMATS = ("records", "gsm8k", "math")  # how rows become records: as they are, GSM8K rows, MATH rows
EMBEDDED = ("demo", "easy")  # word problems written for this project, shipped in src/data/
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FIGURE = re.compile(r"\s*\[asy\].*?\[/asy\]", re.DOTALL)  # Asymptote code of a MATH solution's figure
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX` escapes, so that it can be printed and written as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class BadInput:
    """An input that cannot be pruned: where it is (file:line), why, its id if one could be read, and the
    stage that `failed` with an unexpected exception (src/errors.py), or None where it breaks a rule."""

    where: str
    reason: str
    id: str | None = None
    failed: str | None = None

    def __post_init__(self) -> None:
        self.where, self.reason = printable(self.where), printable(self.reason)
        self.id = None if self.id is None else printable(self.id)

    def __str__(self) -> str:
        place = self.where if self.id is None else f"record {self.id!r} ({self.where})"
        return f"{place}: {self.reason}"

    @classmethod
    def from_error(cls, err: Exception, where: str, rid: str | None, stage: str) -> BadInput:
        """The failure `err`, raised by the record at `where` while `stage` worked on it; re-raises a job error."""
        if ends_job(err):
            raise err
        return cls(where, f"{stage} failed: {type(err).__name__}: {err}", rid, failed=stage)


class Record(dict):
    """A checked `{id, question, reasoning, answer, ...}` record (a dict of its fields) that also knows
    `where` it was read (file and line, or hub row), so a later check such as for repeated ids can name it."""

    def __init__(self, fields: dict[str, Any], where: str):
        super().__init__(fields)
        self.where = where


def readable_id(obj: Any) -> str | None:
    """The record id `obj` carries, as a string, or None: ids are strings or integers."""
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None
    try:
        return str(rid)
    except ValueError:  # an integer too long to print
        return None


def salvaged_id(text: str) -> str | None:
    """The id of a line that is not valid JSON (cut short, say), read by repairing it (json-repair), or None."""
    try:
        return readable_id(json_repair.loads(text))
    except Exception:  # noqa: BLE001 - only a courtesy for the skip report; the line is bad input either way
        return None


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's fields; a key given twice is an error (which value was meant is unknowable)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {printable(key)!r}")
        obj[key] = value
    return obj


def parse_line(raw: bytes, first: bool, where: str) -> dict[str, Any] | BadInput | None:
    """One JSONL line as an object, BadInput, or None when blank."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as err:
        readable = raw.decode("utf-8", "replace")
        return BadInput(where, f"not valid UTF-8 ({err.reason} at byte {err.start})", salvaged_id(readable))
    if not text.strip():
        return None
    text = text.rstrip("\r\n")  # JSON whitespace; without it a torn line reads as unterminated, as it is
    try:
        obj = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as err:
        return BadInput(where, f"not valid JSON ({err.msg}, column {err.colno})", salvaged_id(text))
    except RecursionError:
        return BadInput(where, "not readable: JSON nested too deeply")
    except ValueError as err:  # a duplicate key, or an integer of more than 4300 digits
        return BadInput(where, f"not valid JSON ({err})", salvaged_id(text))
    if not isinstance(obj, dict):
        return BadInput(where, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | BadInput]]:
    """(line number, object) for each non-blank line of a UTF-8 JSONL file, with or without a byte-order
    mark (gzipped when it ends in .gz); undecodable, non-object or otherwise unreadable lines become BadInput,
    and so does the end of a gzip file that is cut short (the lines before it are read)."""
    path, lineno = Path(path), 0
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                where = f"{path}:{lineno}"
                try:
                    obj = parse_line(raw, lineno == 1, where)
                except Exception as err:  # a record boundary: src/errors.py
                    obj = BadInput.from_error(err, where, None, "reading")
                if obj is not None:
                    yield lineno, obj
        except (EOFError, zlib.error) as err:  # a gzip file cut short or damaged: what came before stands
            yield lineno + 1, BadInput(f"{path}:{lineno + 1}", f"compressed data ends or breaks here ({err})")


def unencodable(obj: dict[str, Any]) -> str | None:
    """Why `obj` cannot be written as UTF-8 (a lone surrogate, e.g. "\\ud800" in text cut inside an emoji), or None."""
    for key, value in obj.items():
        if _SURROGATE.search(key):
            return f"field name {printable(key)!r} holds a lone surrogate, which is not Unicode text"
        found = _SURROGATE.search(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        if found:
            at = f" at character {found.start()}" if isinstance(value, str) else ""
            return (
                f"field {key!r} holds a lone surrogate {printable(found.group())}{at}, which is not Unicode text "
                "(text cut inside a character?); repair the source"
            )
    return None


def check_record(obj: dict[str, Any], where: str) -> Record | BadInput:
    """The record read at `where`, with a string id, or BadInput naming the missing, mistyped or empty field,
    or text that is not Unicode (a lone surrogate: rejected, never repaired).

    An empty answer is bad input: the Answer objective, log p(answer), means nothing on it.
    """
    rid = readable_id(obj)
    for key in REQUIRED:
        if key not in obj:
            return BadInput(where, f"missing field {key!r}", rid)
        if not isinstance(obj[key], str):
            return BadInput(where, f"field {key!r} must be a string, got {type(obj[key]).__name__}", rid)
    for key in ("reasoning", "answer"):
        if not obj[key].strip():
            return BadInput(where, f"empty {key}", rid)
    if "id" not in obj:
        return BadInput(where, "missing field 'id'")
    if rid is None:
        return BadInput(where, f"field 'id' must be a string or an integer, got {type(obj['id']).__name__}")
    if not rid.strip():
        return BadInput(where, "empty id", rid)
    why = unencodable(obj)
    if why:
        return BadInput(where, why, rid)
    return Record({**obj, "id": rid}, where)


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
        return BadInput(where, "GSM8K row needs a string field 'answer'", rid)
    parsed = split_gsm8k(row["answer"])
    if parsed is None:
        return BadInput(where, "GSM8K answer has no final '#### N' line", rid)
    solution, gold = parsed
    return {
        "id": rid,
        "question": row.get("question"),
        "reasoning": _CALCULATOR.sub("", solution).strip(),
        "answer": answer_template.replace("{answer}", gold),
        "gold": gold,
        "dataset": dataset,
    }


def math_gold(row: dict[str, Any], solution: str) -> str | None:
    """The gold of a MATH row: its `answer` field (MATH-500), else the last \\boxed{} of its `solution`."""
    answer = row.get("answer")
    return answer.strip() if isinstance(answer, str) and answer.strip() else last_boxed(solution)


def math_record(
    row: dict[str, Any], rid: str, answer_template: str, where: str, dataset: str = "math"
) -> dict[str, Any] | BadInput:
    """A MATH row {problem, solution[, answer, unique_id]} as a record with the id `unique_id` (else `rid`);
    its level and subject (MATH's `type`) are carried.

    The reasoning is the solution with each \\boxed{X} written X: as GSM8K's `#### N` line is cut, the
    answer's marker leaves the reasoning and the value it states stays. Figures' Asymptote code
    ([asy]…[/asy]) is cut too: it draws, it does not reason. The answer is `answer_template` with the gold.
    """
    for key in ("problem", "solution"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            return BadInput(where, f"MATH row needs a non-empty string field {key!r}", rid)
    gold = math_gold(row, row["solution"])
    if gold is None:
        return BadInput(where, "MATH solution has no non-empty \\boxed{...} and the row no 'answer' field", rid)
    unique_id, subject = row.get("unique_id"), row.get("subject", row.get("type"))
    return {
        "id": unique_id if isinstance(unique_id, str) and unique_id else rid,
        "question": row["problem"],
        "reasoning": _FIGURE.sub("", unbox(row["solution"])).strip(),
        "answer": answer_template.replace("{answer}", gold),
        "gold": gold,
        "dataset": dataset,
        **{key: value for key, value in (("level", row.get("level")), ("subject", subject)) if value is not None},
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


def math_id(split: str, index: int) -> str:
    """The id of MATH row `index` (from 0) of a `split` file whose rows have no `unique_id` (`math-train-17`), on
    every path (pruning, teacher sampling)."""
    return f"math-{split}-{index}"


def load_records(
    path: str,
    format: str = "records",
    split: str = "test",
    answer_template: str = "{answer}",
    id_prefix: str | None = None,
    name: str = "gsm8k",
) -> Iterator[Record | BadInput]:
    """Records (each with its `where`) or BadInput from `path`, in file order; `format` is one of `FORMATS`.

    GSM8K rows get the id `{id_prefix}{row number}` (default prefix: the file's stem), MATH rows their
    `unique_id` when they have one (else `math_id`), and both `dataset=name`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; expected one of {FORMATS}")
    config = "main" if "gsm8k" in path.lower() else None
    for count, (where, row) in enumerate(source_rows(path, split, config)):
        if isinstance(row, BadInput):
            yield row
            continue
        try:  # a record boundary: src/errors.py
            if format == "gsm8k":
                rid = gsm8k_id(path, count) if id_prefix is None else f"{id_prefix}{count}"
                row = gsm8k_record(row, rid, answer_template, where, name)
            elif format == "math":
                rid = math_id(split, count) if id_prefix is None else f"{id_prefix}{count}"
                row = math_record(row, rid, answer_template, where, name)
            item = row if isinstance(row, BadInput) else check_record(row, where)
        except Exception as err:
            item = BadInput.from_error(err, where, readable_id(row), "checking")
        yield item


def select(
    items: Iterable[Record | BadInput],
    n_tokens: Callable[[Record], int],
    window: Sequence[int] | None = None,
    limit: int | None = None,
) -> Iterator[Record | BadInput]:
    """The first `limit` records whose reasoning length (`n_tokens`) lies in `window` = [min, max].

    BadInput passes through for the caller to report; so does a record whose length cannot be measured.
    """
    taken = 0
    for item in items:
        if limit is not None and taken >= limit:
            return
        if not isinstance(item, BadInput) and window is not None:
            try:  # a record boundary: src/errors.py
                inside = window[0] <= n_tokens(item) <= window[1]
            except Exception as err:
                item, inside = BadInput.from_error(err, item.where, item["id"], "tokenization"), True
            if not inside:
                continue
        taken += not isinstance(item, BadInput)
        yield item
