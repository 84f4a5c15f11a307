"""Surrogate labels: records with exact scores of every candidate at some steps, as a labelling run writes them
or packed to ship.

Two kinds of run label: exact greedy with `record_scores` (every step of the exact path, `step_scores`) and
any run with `exact_checks` (the steps it checked exactly; a hybrid run's: on-policy labels, the states
the hybrid itself reaches). `surrogate.groups.labelled_steps` gives either as (step, scores).

A labelling run (`+experiment=label`, `label_onpolicy`) writes full records (records.jsonl). `pack_labels`
keeps what is expensive to recompute (ids, deletion orders, objectives, the scores and the cost)
plus a hash of the record's text, gzipped, and no dataset text. `read_labels` reads either kind; a
packed file is joined back with the records of the dataset it was made from by id, and a record
whose text no longer matches its hash is an error naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from src.data import BadInput, read_jsonl
from surrogate.groups import labelled_steps

PACKED_FIELDS = (
    "id",
    "method",
    "objective",
    "pruner",
    "n_reasoning_tokens",
    "deletion_order",
    "step_objective",
    "step_scores",
    "exact_checks",
    "cost",
)
TEXT_FIELDS = ("question", "reasoning", "answer")
log = logging.getLogger(__name__)


def text_hash(record: dict[str, Any]) -> str:
    """A short hash of the record's question, reasoning and answer: what its labels were computed on."""
    return hashlib.sha256(json.dumps([record[k] for k in TEXT_FIELDS]).encode()).hexdigest()[:16]


def _rounded(scores: list[list[float]]) -> list[list[float]]:
    """[[index, J], ...] with J to 6 decimals (a micro-nat: below the scorers' fp32 noise)."""
    return [[i, round(s, 6)] for i, s in scores]


def pack_labels(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write the label fields of `records` (those with labelled steps) to a gzipped JSONL file; how many were
    written. A record met twice with the same labels (a run packed part-way) is written once."""
    lines, seen = [], {}
    for record in records:
        if not labelled_steps(record):
            continue
        packed = {k: record[k] for k in PACKED_FIELDS if k in record}
        if record.get("step_scores"):
            packed["step_scores"] = [_rounded(step) for step in record["step_scores"]]
        if record.get("exact_checks"):
            packed["exact_checks"] = [{**c, "scores": _rounded(c["scores"])} for c in record["exact_checks"]]
        packed["text_sha256"] = record.get("text_sha256") or text_hash(record)  # already packed: kept
        line = json.dumps(packed) + "\n"
        if record["id"] in seen:  # packed before and still in its labelling run: the same labels are kept once
            if seen[record["id"]] != line:
                raise ValueError(f"record {record['id']!r} is labelled twice, with different labels")
            continue
        seen[record["id"]] = line
        lines.append(line)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # No name and mtime 0 in the header: the same labels give the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write("".join(lines).encode("utf-8"))
    return len(lines)


def _rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """(location, object) of every line of a JSONL file, gzipped or not; a bad line is an error naming it."""
    for lineno, row in read_jsonl(path):
        if isinstance(row, BadInput):
            raise ValueError(str(row))
        yield f"{path}:{lineno}", row


def label_rows(paths: Iterable[str | Path]) -> Iterable[dict[str, Any]]:
    """The labelled rows of these files as they are (packed ones without their text), in file order."""
    for path in paths:
        yield from (row for _, row in _rows(Path(path)) if labelled_steps(row))


def labelled_ids(paths: Iterable[str | Path]) -> set[str]:
    """Ids of the labelled records in these files (records.jsonl or packed), to pass over when labelling more."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            log.warning("%s does not exist (no labels packed yet): nothing there to pass over", path)
    return {row["id"] for row in label_rows(p for p in paths if p.exists())}


def read_labels(
    paths: str | Path | Iterable[str | Path], dataset: Callable[[], Iterable[dict | BadInput]] | None = None
) -> list[dict[str, Any]]:
    """Labelled records (with labelled steps) from records.jsonl files and packed `.jsonl.gz` files.

    `dataset()` yields the records packed labels were made from (for their text, and their `prompt` if they
    carry one: how they are encoded); an id in two files,
    or a packed record missing from the dataset or changed since, is an error that names it.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    texts: dict[str, dict] | None = None
    found: dict[str, str] = {}
    labelled = []
    for path in map(Path, paths):
        for where, row in _rows(path):
            if not labelled_steps(row):
                continue
            if row["id"] in found:
                raise ValueError(f"record {row['id']!r} is labelled twice: {found[row['id']]} and {where}")
            found[row["id"]] = where
            if "text_sha256" in row:
                if texts is None:
                    if dataset is None:
                        raise ValueError(f"{path} holds packed labels; give the dataset they were made from")
                    texts = {r["id"]: r for r in dataset() if not isinstance(r, BadInput)}
                source = texts.get(row["id"])
                if source is None:
                    raise ValueError(f"record {row['id']!r} ({where}) is not in the dataset its labels were made from")
                if text_hash(source) != row["text_sha256"]:
                    raise ValueError(f"record {row['id']!r} ({where}): its text changed since it was labelled")
                row = {**{k: source[k] for k in (*TEXT_FIELDS, "prompt") if k in source}, **row}
            labelled.append(row)
    if not labelled:
        raise ValueError(
            f"no labelled records in {', '.join(map(str, paths))}; label with record_scores=true or exact_checks"
        )
    return labelled
