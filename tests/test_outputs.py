"""The JSONL writer resumes after an interruption without losing or duplicating records."""

from __future__ import annotations

import json

import pytest

from src.outputs import RecordWriter


def test_resume_knows_finished_ids(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"id": "a", "x": 1})
        writer.write({"id": "b", "x": 2})
    with RecordWriter(path) as writer:
        assert writer.done == {"a", "b"}
        writer.write({"id": "c", "x": 3})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "x": [1, 2')
    with RecordWriter(path) as writer:
        assert writer.done == {"a"}
        writer.write({"id": "b"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_whole_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    with RecordWriter(path) as writer:
        assert writer.done == {"a", "b"}
        writer.write({"id": "c"})
    assert path.read_text().splitlines() == ['{"id": "a"}', '{"id": "b"}', '{"id": "c"}']


def test_corrupt_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\nbroken\n{"id": "c"}\n')
    with pytest.raises(ValueError, match=r"records.jsonl:2: corrupt line inside an existing output file \(not valid"):
        RecordWriter(path)
