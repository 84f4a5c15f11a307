"""Reading records: the GSM8K adapter, the demo set, and every kind of bad line."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import pytest

from src.api import compose_config
from src.data import BadInput, gsm8k_record, load_records, math_record, select

SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
SHARED_MATH500 = SHARED_GSM8K.parents[1] / "math500" / "test.jsonl"


def test_gsm8k_row_becomes_a_record():
    row = {"question": "Q?", "answer": "She has 3*4=<<3*4=12>>12 apples.\nThen 12+1=<<12+1=13>>13.\n#### 13"}
    record = gsm8k_record(row, "r1", '{"answer": {answer}}', "f:1")
    assert record["reasoning"] == "She has 3*4=12 apples.\nThen 12+1=13."
    assert record["answer"] == '{"answer": 13}'
    assert record["gold"] == "13" and record["id"] == "r1"


def test_math_row_becomes_a_record_with_its_boxed_answer_unwrapped():
    row = {
        "problem": "Find $x$.",
        "solution": "So $x = \\frac{1}{2}$,\n[asy]\ndraw((0,0)--(1,1));\n[/asy]\nand $x^2 = \\boxed{\\frac{1}{4}}$.",
        "answer": "\\frac14",
        "unique_id": "test/algebra/1.json",
        "level": 2,
    }
    template = "Thus, the final answer is: \\boxed{{answer}}"
    record = math_record(row, "math500-0", template, "m:1", "math500")
    assert record["reasoning"] == "So $x = \\frac{1}{2}$,\nand $x^2 = \\frac{1}{4}$."  # the marker and figure go
    assert record["answer"] == "Thus, the final answer is: \\boxed{\\frac14}"  # the gold of the answer field
    assert (record["id"], record["gold"], record["dataset"], record["level"]) == (
        "test/algebra/1.json",
        "\\frac14",
        "math500",
        2,
    )
    no_answer = math_record({"problem": "p", "solution": "It is $\\boxed{7}$."}, "r", template, "m:2")
    assert (no_answer["id"], no_answer["gold"], no_answer["reasoning"]) == ("r", "7", "It is $7$.")


def test_math_rows_without_a_gold_or_a_solution_are_reported(tmp_path):
    rows = [{"problem": "p", "solution": "no box"}, {"problem": "p"}, {"problem": "p", "solution": "$\\boxed{3}$"}]
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(row).encode() for row in rows])
    no_gold, no_solution, good = load_records(str(path), "math", answer_template="{answer}")
    assert isinstance(no_gold, BadInput) and "\\boxed" in no_gold.reason and no_gold.where.endswith("m.jsonl:1")
    assert isinstance(no_solution, BadInput) and "'solution'" in no_solution.reason
    assert good["id"] == "math-test-2" and good["answer"] == "3"  # as the distillation path names it


@pytest.mark.skipif(not SHARED_MATH500.exists(), reason="../shared/data/math500 is not on this machine")
def test_shared_math500_reads_cleanly_as_the_data_group_names_it():
    cfg = compose_config("data=math500").data
    records = list(load_records(cfg.path, cfg.format, cfg.split, cfg.answer_template, cfg.id_prefix, cfg.name))
    assert len(records) == 500 and not [r for r in records if isinstance(r, BadInput)]
    assert records[0]["id"] == "test/precalculus/807.json" and "\\boxed" not in records[0]["reasoning"]
    assert records[0]["answer"] == "Thus, the final answer is: \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}"


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


def fields(**given) -> bytes:
    """A JSON object of the four fields, `given` replacing or adding to them (written as they come)."""
    body = {"id": '"x"', "question": '"q"', "reasoning": '"r"', "answer": '"a"', **given}
    return ("{" + ", ".join(f'"{key}": {value}' for key, value in body.items()) + "}").encode()


@pytest.mark.parametrize(
    "line, reason, rid",
    [
        (b'{"id": "x", "question": "q", "reasoning": "r"', "not valid JSON", "x"),  # the id of a torn line is read
        (b'{"id": "x", "question": "q", "answer": "a"}', "missing field 'reasoning'", "x"),
        (fields(reasoning="5"), "field 'reasoning' must be a string, got int", "x"),
        (fields(reasoning='"   "'), "empty reasoning", "x"),
        (fields(answer='" "'), "empty answer", "x"),
        (b'{"id": "x", "question": "q", "reasoning": "caf\xe9", "answer": "a"}', "not valid UTF-8", "x"),
        (b'["a list"]', "expected a JSON object, got list", None),
        (b'{"question": "q", "reasoning": "r", "answer": "a"}', "missing field 'id'", None),
        (fields(id="true"), "field 'id' must be a string or an integer, got bool", None),
        (fields(id='" "'), "empty id", " "),
        (fields(question="[" * 5000 + "]" * 5000), "JSON nested too deeply", None),
        (b'{"id": "x", "question": "q", "reasoning": "r", "reasoning": 5, "answer": "a"}', "duplicate key", "x"),
        (fields(id="7" * 5000), "Exceeds the limit (4300 digits)", "7" * 5000),
        (fields(reasoning='"a \\ud800 b"'), "field 'reasoning' holds a lone surrogate \\ud800 at character 2", "x"),
        (fields(m='{"\\udfff": 1}'), "field 'm' holds a lone surrogate", "x"),
        (fields(**{"\\udfff": "1"}), "field name '\\\\udfff' holds a lone surrogate", "x"),
    ],
)
def test_bad_line_is_reported_with_its_place_and_the_rest_still_read(tmp_path, line, reason, rid):
    path = write_lines(tmp_path / "in.jsonl", [good("a"), line, good("b")])
    items = list(load_records(str(path)))
    assert [i["id"] for i in items if not isinstance(i, BadInput)] == ["a", "b"]
    (bad,) = [i for i in items if isinstance(i, BadInput)]
    assert reason in bad.reason
    assert (bad.where, bad.id, bad.failed) == (f"{path}:2", rid, None)
    json.dumps(vars(bad), ensure_ascii=False).encode("utf-8")  # printable: no lone surrogate in a report


def test_an_unexpected_error_on_one_record_is_its_failure_and_a_job_error_is_raised(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [good("a"), good("bb"), good("c")])

    def length(record) -> int:
        if record["id"] == "bb":
            raise TypeError("TextEncodeInput must be Union[...]")
        return 3

    items = list(select(load_records(str(path)), length, window=[1, 10]))
    assert [i["id"] if isinstance(i, dict) else (i.id, i.where, i.reason, i.failed) for i in items] == [
        "a",
        ("bb", f"{path}:2", "tokenization failed: TypeError: TextEncodeInput must be Union[...]", "tokenization"),
        "c",
    ]

    def full_disk(record) -> int:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        list(select(load_records(str(path)), full_disk, window=[1, 10]))


def test_a_gzip_file_cut_short_keeps_the_lines_before_it(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(b"".join(good(rid) + b"\n" for rid in "abcdefgh") * 50)
    path.write_bytes(whole[: len(whole) // 2])
    items = list(load_records(str(path)))
    assert items and all(not isinstance(i, BadInput) for i in items[:-1])
    assert isinstance(items[-1], BadInput) and "compressed data ends or breaks here" in items[-1].reason


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
