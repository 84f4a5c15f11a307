"""Reading records: the GSM8K adapter, the demo set, and every kind of bad line."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import pytest

from src.data import BadInput, gsm8k_record, load_records, select

SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def test_gsm8k_row_becomes_a_record():
    row = {"question": "Q?", "answer": "She has 3*4=<<3*4=12>>12 apples.\nThen 12+1=<<12+1=13>>13.\n#### 13"}
    record = gsm8k_record(row, "r1", '{"answer": {answer}}', "f:1")
    assert record["reasoning"] == "She has 3*4=12 apples.\nThen 12+1=13."
    assert record["answer"] == '{"answer": 13}'
    assert record["gold"] == "13" and record["id"] == "r1"


def test_demo_set_is_complete_and_unique():
    records = list(load_records("demo", "gsm8k", id_prefix="demo-"))
    assert 10 <= len(records) <= 20
    assert not [r for r in records if isinstance(r, BadInput)]
    assert len({r["id"] for r in records}) == len(records)
    assert all("<<" not in r["reasoning"] and r["gold"] for r in records)


def test_ids_window_and_limit():
    records = list(load_records("demo", "gsm8k", id_prefix="x"))
    assert [r["id"] for r in records[:3]] == ["x0", "x1", "x2"]
    bad = BadInput("f:1", "broken")
    items = [records[0], bad, records[1], records[2], records[3]]
    lengths = {"x0": 10, "x1": 50, "x2": 20, "x3": 30}
    chosen = list(select(items, lambda r: lengths[r["id"]], window=[15, 40], limit=2))
    assert chosen == [bad, records[2], records[3]]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def good(rid: str) -> bytes:
    return json.dumps({"id": rid, "question": "q", "reasoning": "r r", "answer": "a"}).encode()


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"id": "x", "question": "q", "reasoning": "r"', "not valid JSON"),
        (b'{"id": "x", "question": "q", "answer": "a"}', "missing field 'reasoning'"),
        (b'{"id": "x", "question": "q", "reasoning": 5, "answer": "a"}', "field 'reasoning' must be a string, got int"),
        (b'{"id": "x", "question": "q", "reasoning": "   ", "answer": "a"}', "empty reasoning"),
        (b'{"id": "x", "question": "q", "reasoning": "r", "answer": " "}', "empty answer"),
        (b'{"id": "x", "question": "q", "reasoning": "caf\xe9", "answer": "a"}', "not valid UTF-8"),
        (b'["a list"]', "expected a JSON object, got list"),
        (b'{"question": "q", "reasoning": "r", "answer": "a"}', "missing or non-string field 'id'"),
    ],
)
def test_bad_line_is_reported_with_its_place_and_the_rest_still_read(tmp_path, line, reason):
    path = write_lines(tmp_path / "in.jsonl", [good("a"), line, good("b")])
    items = list(load_records(str(path)))
    assert [i["id"] for i in items if not isinstance(i, BadInput)] == ["a", "b"]
    (bad,) = [i for i in items if isinstance(i, BadInput)]
    assert reason in bad.reason
    assert "in.jsonl:2" in bad.where


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_byte_order_mark_is_read_as_utf8(tmp_path, suffix):
    data = b"\xef\xbb\xbf" + good("a") + b"\n" + good("b") + b"\n"
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    assert [r["id"] for r in load_records(str(path))] == ["a", "b"]


def test_records_know_their_file_and_line(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [good("a"), b"", good("b"), good("a")])
    records = list(load_records(str(path)))
    assert [(r["id"], r.where) for r in records] == [("a", f"{path}:1"), ("b", f"{path}:3"), ("a", f"{path}:4")]
    assert records[0] == {"id": "a", "question": "q", "reasoning": "r r", "answer": "a"}  # the fields, nothing added
    assert pickle.loads(pickle.dumps(records[1])).where == f"{path}:3"  # as sent to Ray workers
    assert next(load_records("demo", "gsm8k")).where == "demo.jsonl:1"


def test_gsm8k_row_without_final_answer_is_reported(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "no marker"}).encode()])
    (bad,) = load_records(str(path), "gsm8k")
    assert isinstance(bad, BadInput) and "'#### N'" in bad.reason and "g.jsonl:1" in bad.where


def test_missing_file_without_hub_support_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(FileNotFoundError, match="not a local file"):
        list(load_records("nowhere/none.jsonl"))


@pytest.mark.skipif(not SHARED_GSM8K.exists(), reason="../shared/data/gsm8k is not on this machine")
def test_shared_gsm8k_test_split_reads_cleanly():
    records = list(load_records(str(SHARED_GSM8K), "gsm8k", answer_template="#### {answer}"))
    assert len(records) == 1319
    assert not [r for r in records if isinstance(r, BadInput)]
    assert records[0]["id"] == "test-0" and records[0]["answer"] == "#### 18"
