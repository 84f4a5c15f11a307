"""Pruning runs as analyses read them: a label and the records of a run directory (or JSONL file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exact.keep import n_kept
from src.data import BadInput, read_jsonl


def read_run(spec: str, label: str = "") -> tuple[str, list[dict[str, Any]]]:
    """(label, records) of a run directory holding records.jsonl, or of a records JSONL file.

    Unlabelled runs take the method their records name. A bad line is an error naming the file and
    line: an analysis of a partly unreadable run would mislead.
    """
    path = Path(spec)
    file = path / "records.jsonl" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{spec}: no records (expected a run directory with records.jsonl, or a JSONL file)")
    records = []
    for lineno, row in read_jsonl(file):
        if isinstance(row, BadInput):
            raise ValueError(str(row))
        for key in ("id", "reasoning_tokens", "deletion_order", "n_reasoning_tokens"):
            if key not in row:
                raise ValueError(f"{file}:{lineno}: not a pruning record (no {key!r})")
        records.append(row)
    if not records:
        raise ValueError(f"{file}: no records")
    return label or records[0].get("method") or path.name, records


def read_runs(specs: Sequence[str] | Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Label → records for several runs: paths, or a mapping label → path; repeated labels get a suffix."""
    pairs = specs.items() if isinstance(specs, Mapping) else [("", spec) for spec in specs]
    runs: dict[str, list[dict[str, Any]]] = {}
    for given, spec in pairs:
        label, records = read_run(str(spec), given)
        unique, k = label, 2
        while unique in runs:
            unique, k = f"{label}-{k}", k + 1
        runs[unique] = records
    return runs


def deleted_at(record: dict[str, Any], keep: float) -> set[int] | None:
    """Units deleted at `keep`, or None when the record's deletion order does not reach it."""
    n = record["n_reasoning_tokens"]
    d = n - n_kept(n, keep)
    order = record["deletion_order"]
    return set(order[:d]) if d <= len(order) else None
