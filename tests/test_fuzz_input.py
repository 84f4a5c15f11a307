"""A property-based fuzz of the prune job's input path: JSONL files that mix valid records with hostile
lines (hypothesis), each pruned whole, in-process, on a tiny model.

For every file: the job ends normally; every valid record is pruned exactly once; every other line is in
skipped.jsonl with its line number; both outputs are valid UTF-8 JSON lines; a second run in the same
directory adds nothing. The oracle knows the rules by construction: which lines are valid, blank lines
dropped, and the documented length window, length limit, duplicate ids and `data.limit`.

`FUZZ_SEED=N` replays one run of examples; a failure prints the seed that found it.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st
from test_run import prune_config

from src.run import run_task

SEED = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
WINDOW = (2, 24)  # data.reasoning_tokens: records outside are passed over
MAX_TOKENS = 16  # data.max_reasoning_tokens: longer records in the window are skipped
BOM = b"\xef\xbb\xbf"


@dataclass
class Line:
    """One generated line: its bytes, and the record it holds if the rules accept it (None: a bad line)."""

    raw: bytes
    record: dict | None
    blank: bool = False
    bom: bool = False  # valid only as the file's first line


# ── valid records ──────────────────────────────────────────────────────────────────────────────────────

PIECES = ["<|im_end|>", "<|im_start|>", "\x00", "\r", "\r\n", "\u202e", "שלום", "🍎", "\ufeff", "é", "  ", '"', "\\"]
char = st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(PIECES))
text = st.lists(char, max_size=8).map("".join)
nonblank = st.lists(char, min_size=1, max_size=8).map("".join).filter(str.strip)
ids = st.one_of(
    st.sampled_from(["a", "b", "1", " x "]),  # few ids, so that some repeat
    st.integers(0, 2),
    st.integers(-(10**30), 10**30),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6).filter(str.strip),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
records = st.fixed_dictionaries(
    {"id": ids, "question": text, "reasoning": nonblank, "answer": nonblank},
    optional={"meta": json_values, "gold": json_values},
)


def dump(record: dict, ascii_only: bool) -> bytes:
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8")


@st.composite
def valid(draw) -> Line:
    """A valid record, written with or without escapes, perhaps with CR line endings or a huge reasoning."""
    record = draw(records)
    if draw(st.booleans()):
        record["reasoning"] = "x" * draw(st.sampled_from([MAX_TOKENS + 1, WINDOW[1], WINDOW[1] + 1, 5000]))
    raw = dump(record, draw(st.booleans()))
    return Line(draw(st.sampled_from([raw, raw + b"\r", b"\r" + raw, b" " + raw])), record)


# ── hostile lines ──────────────────────────────────────────────────────────────────────────────────────


@st.composite
def wrong_type(draw) -> Line:
    record = draw(records)
    key = draw(st.sampled_from(["id", "question", "reasoning", "answer"]))
    others = (
        json_values.filter(lambda v: not isinstance(v, str))
        if key != "id"
        else st.one_of(
            st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2), st.just(" ")
        )
    )
    record[key] = draw(others)
    return Line(dump(record, True), None)


@st.composite
def missing(draw) -> Line:
    record = draw(records)
    del record[draw(st.sampled_from(["id", "question", "reasoning", "answer"]))]
    return Line(dump(record, True), None)


@st.composite
def blank_text(draw) -> Line:
    record = draw(records)
    record[draw(st.sampled_from(["reasoning", "answer"]))] = draw(st.sampled_from(["", " ", "\t\n", "\u3000"]))
    return Line(dump(record, draw(st.booleans())), None)


@st.composite
def lone_surrogate(draw) -> Line:
    """A lone surrogate in any string: a field, the id, an extra field's name or a nested value."""
    record, surrogate = draw(records), draw(st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]))
    where = draw(st.sampled_from(["question", "reasoning", "answer", "id", "key", "nested"]))
    if where == "key":
        record[f"k{surrogate}"] = 1
    elif where == "nested":
        record["meta"] = {"a": [1, f"x{surrogate}y"]}
    else:
        value = str(record[where])
        at = draw(st.integers(0, len(value)))
        record[where] = value[:at] + surrogate + value[at:]
    return Line(dump(record, True), None)  # escaped: \\ud800 is valid JSON, and a lone surrogate once read


@st.composite
def invalid_utf8(draw) -> Line:
    raw = dump(draw(records), False)
    at = draw(st.integers(0, len(raw)))
    return Line(raw[:at] + b"\xff" + raw[at:], None)


@st.composite
def truncated(draw) -> Line:
    raw = dump(draw(records), draw(st.booleans()))
    return Line(raw[: draw(st.integers(1, len(raw) - 2))], None)


@st.composite
def deep(draw) -> Line:
    depth = draw(st.sampled_from([3000, 20000]))
    raw = dump(draw(records), True)
    return Line(raw[:-1] + b', "meta": ' + b"[" * depth + b"]" * depth + b"}", None)


@st.composite
def duplicate_key(draw) -> Line:
    record = draw(records)
    key = draw(st.sampled_from(sorted(record)))
    return Line(dump(record, True)[:-1] + f', "{key}": "again"}}'.encode(), None)


non_object = st.builds(
    lambda value: Line(json.dumps(value).encode(), None),
    st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5), st.none(), st.booleans()),
)
huge_int = st.builds(
    lambda record: Line(dump(record, True).replace(b'"question"', b'"n": ' + b"9" * 5000 + b', "question"', 1), None),
    records,
)
with_bom = st.builds(lambda line: Line(BOM + line.raw, line.record, bom=True), valid())
blank = st.sampled_from([b"", b"  ", b"\t", b"\r"]).map(lambda raw: Line(raw, None, blank=True))
lines = st.one_of(
    valid(), valid(), valid(), wrong_type(), missing(), blank_text(), lone_surrogate(), invalid_utf8(), truncated(),
    deep(), duplicate_key(), non_object, huge_int, with_bom, blank,
)  # fmt: skip


# ── the oracle and the property ────────────────────────────────────────────────────────────────────────


def expected(lines: list[Line], limit: int | None, n_tokens) -> tuple[list[str], list[int]]:
    """The ids pruned, in order, and the line numbers skipped, by the documented rules."""
    pruned, skipped, seen, taken = [], [], set(), 0
    for number, line in enumerate(lines, start=1):
        if limit is not None and taken >= limit:
            break  # data.limit reached: nothing after is read
        if line.blank:
            continue
        if line.record is None or (line.bom and number > 1):
            skipped.append(number)
            continue
        length = n_tokens(line.record["reasoning"])
        if not WINDOW[0] <= length <= WINDOW[1]:
            continue  # passed over
        taken += 1
        rid = str(line.record["id"])
        if rid in seen or length > MAX_TOKENS:
            skipped.append(number)  # a repeated id; too long (its id is still taken: a later copy is repeated)
        else:
            pruned.append(rid)
        seen.add(rid)
    return pruned, skipped


def json_lines(path: Path) -> list[dict]:
    """The objects of a JSONL output, which must be strict UTF-8, hold no lone surrogate, and split into the
    same lines at "\n" as with `str.splitlines`."""
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8")
    assert text[-1:] in ("", "\n") and text.split("\n")[:-1] == text.splitlines()
    rows = [json.loads(line) for line in text.splitlines()]
    json.dumps(rows, ensure_ascii=False).encode("utf-8")
    return rows


@seed(SEED)
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 12)),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(lines=st.lists(lines, min_size=1, max_size=9), limit=st.one_of(st.none(), st.integers(1, 5)))
def test_any_mix_of_valid_and_hostile_lines_is_pruned_or_reported(tiny_model_dir, tokenizer, lines, limit):
    note(f"FUZZ_SEED={SEED} replays this run")
    n_tokens = lambda text: len(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])  # noqa: E731
    pruned, skipped = expected(lines, limit, n_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "in.jsonl", Path(tmp) / "run"
        data.write_bytes(b"".join(line.raw + b"\n" for line in lines))
        settings_ = (
            f"data.reasoning_tokens=[{WINDOW[0]},{WINDOW[1]}]",
            f"data.max_reasoning_tokens={MAX_TOKENS}",
            f"data.limit={'null' if limit is None else limit}",
            "runtime.num_threads=1",
        )
        summary = run_task(prune_config(tiny_model_dir, data, out, *settings_))
        assert summary["failed"] == 0
        assert [r["id"] for r in json_lines(out / "records.jsonl")] == pruned
        reports = json_lines(out / "skipped.jsonl")
        assert [int(re.search(r":(\d+)$", r["where"]).group(1)) for r in reports] == skipped
        assert all(set(r) == {"id", "where", "reason"} and r["where"].startswith(str(data)) for r in reports)

        before = (out / "records.jsonl").read_bytes()
        again = run_task(prune_config(tiny_model_dir, data, out, *settings_))
        assert again["pruned"] == 0 and (out / "records.jsonl").read_bytes() == before
