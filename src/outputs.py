"""Output that survives interruption: JSONL that never loses or duplicates a record, and atomic file replacement."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from src.data import BadInput, read_jsonl

log = logging.getLogger(__name__)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(row: Any) -> bytes:
    """`row` as one UTF-8 JSON line. Non-ASCII text stays as it is, except the three characters that
    Python's `str.splitlines` also breaks lines at (U+0085, U+2028, U+2029): they are escaped, so the
    line reads back as one line however it is split. Text that is not Unicode (a lone surrogate) raises
    UnicodeEncodeError before anything is written."""
    return json.dumps(row, ensure_ascii=False).translate(_LINE_BREAKS).encode("utf-8") + b"\n"


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Write `rows` to `path`, one `json_line` each."""
    Path(path).write_bytes(b"".join(map(json_line, rows)))


class RecordWriter:
    """Appends one JSON line per finished record, flushed and fsynced, to `path`.

    On open it reads the ids already there, and drops a torn last line left by a killed run, so a
    rerun on the same file resumes: `done` holds the ids to skip.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        self._truncate_torn_tail()
        self._handle = self.path.open("ab")

    def _truncate_torn_tail(self) -> None:
        """Read the ids already written; drop a torn last line, refuse a corrupt line before it."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            lines = handle.readlines()
        for lineno, row in read_jsonl(self.path):
            if not isinstance(row, BadInput) and "id" in row:
                self.done.add(str(row["id"]))
                continue
            why = row.reason if isinstance(row, BadInput) else "no 'id' field"
            if lineno < len(lines):
                raise ValueError(f"{self.path}:{lineno}: corrupt line inside an existing output file ({why})")
            log.warning("%s:%d: dropping the incomplete line left by an interrupted run (%s)", self.path, lineno, why)
            with self.path.open("r+b") as handle:
                handle.truncate(sum(map(len, lines[:-1])))
            return
        if lines and not lines[-1].endswith(b"\n"):  # a whole record that lost its newline
            with self.path.open("ab") as handle:
                handle.write(b"\n")

    def write(self, row: dict[str, Any]) -> None:
        """Append `row`; a row that cannot be encoded as UTF-8 JSON raises before a byte is written."""
        self._handle.write(json_line(row))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(str(row["id"]))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_atomic(path: str | Path, text: str) -> None:
    """Replace `path` by `text` so that a kill at any moment leaves either the old or the new file whole.

    The text goes to `<name>.tmp` beside it, flushed and fsynced, which then replaces `path`; fsyncing
    the folder makes the rename itself durable.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
