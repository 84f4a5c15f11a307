"""Bad input at every entry point: a clear error naming the file and line or the record id, and
nothing already written is lost. Each job first writes a good record, then meets one kind of bad input."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from src.api import compose_config
from src.errors import TooManyFailures, error_line, is_known_error
from src.models import ModelNotFound
from src.run import run_task
from surrogate.models import Surrogate
from tests.test_run import prune_config, read_ids, records_file, row


@pytest.fixture
def started(tmp_path, tiny_model_dir):
    """A run directory holding one finished record, and its bytes."""
    out = tmp_path / "run"
    run_task(prune_config(tiny_model_dir, records_file(tmp_path, [row("good")]), out))
    return out, (out / "records.jsonl").read_bytes()


def rerun_with(tmp_path: Path, tiny_model_dir: str, out: Path, line: bytes, *extra: str) -> list[dict]:
    """Rerun the same job on the good record plus one bad line; the skip reports."""
    data = tmp_path / "bad.jsonl"
    data.write_bytes(json.dumps(row("good")).encode() + b"\n" + line + b"\n")
    run_task(prune_config(tiny_model_dir, data, out, *extra))
    return [json.loads(s) for s in (out / "skipped.jsonl").read_text().splitlines()]


def kept_intact(out: Path, before: bytes) -> None:
    assert (out / "records.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    "line,reason",
    [
        (b'{"id": "x", "question": "Q"', "not valid JSON"),  # malformed JSONL: the id is still read
        (json.dumps({**row("x"), "reasoning": 7}).encode(), "field 'reasoning' must be a string"),
        (json.dumps(row("x", reasoning="  ")).encode(), "empty reasoning"),
        (json.dumps(row("x", reasoning="y" * 40)).encode(), "more than max_reasoning_tokens=30"),
        (b'{"id": "x", "question": "caf\xe9"}', "not valid UTF-8"),
        (json.dumps(row("x", reasoning="a \ud800 b")).encode(), "lone surrogate \\ud800 at character 2"),
    ],
    ids=["malformed-json", "wrong-type", "empty-reasoning", "over-long-reasoning", "non-utf8", "lone-surrogate"],
)
def test_bad_record_is_named_and_skipped(tmp_path, tiny_model_dir, started, line, reason):
    out, before = started
    skipped = rerun_with(tmp_path, tiny_model_dir, out, line, "data.max_reasoning_tokens=30")
    assert len(skipped) == 1 and set(skipped[0]) == {"id", "where", "reason"}
    assert skipped[0]["id"] == "x" and skipped[0]["where"].endswith("bad.jsonl:2") and reason in skipped[0]["reason"]
    kept_intact(out, before)


def test_unknown_model_while_offline(tmp_path, tiny_model_dir, started, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, before = started
    cfg = prune_config("no-such-org/no-such-model", records_file(tmp_path, [row("b")]), out)
    with pytest.raises(ModelNotFound, match="no-such-org/no-such-model"):
        run_task(cfg)
    kept_intact(out, before)


@pytest.mark.parametrize("keep", ["0", "1.5", "-0.2"])
def test_keep_fraction_outside_zero_one(tmp_path, tiny_model_dir, started, keep):
    out, before = started
    cfg = prune_config(
        tiny_model_dir, records_file(tmp_path, [row("b")]), out, f"pruner.prune.keep_fractions=[0.5,{keep}]"
    )
    with pytest.raises(ValueError, match=r"keep fraction must be in \(0, 1\].*pruner.prune.keep_fractions"):
        run_task(cfg)
    kept_intact(out, before)


def test_surrogate_of_another_model(tmp_path, tiny_model_dir, started):
    out, before = started
    checkpoint = tmp_path / "other.pt"
    Surrogate(n_features=8, kind="linear").save(checkpoint, meta={"pruner": "Qwen/Qwen2.5-7B-Instruct"})
    cfg = prune_config(
        tiny_model_dir, records_file(tmp_path, [row("b")]), out, "scorer=hybrid", f"scorer.surrogate={checkpoint}"
    )
    with pytest.raises(ValueError, match="trained for the pruner model 'Qwen/Qwen2.5-7B-Instruct'"):
        run_task(cfg)
    kept_intact(out, before)


def test_analysis_of_a_corrupt_run_names_the_line(tmp_path, started):
    out, _ = started
    with (out / "records.jsonl").open("ab") as handle:
        handle.write(b"\xff\xfe not json\n")
    cfg = compose_config(
        "+experiment=analysis_cost", f"analysis.runs=[{out}]", f"output_dir={tmp_path / 'a'}", "logger=none"
    )
    with pytest.raises(ValueError, match=r"records.jsonl:2: not valid UTF-8"):
        run_task(cfg)


def test_benchmark_rows_name_their_line(tmp_path, caplog):
    from src.problems import load_benchmark

    pool = tmp_path / "pool.jsonl"
    lines = [json.dumps({"question": f"q{i}", "answer": f"w\n#### {i}"}) for i in range(6)]
    pool.write_text("\n".join(lines[:3] + ['{"question": "no final line", "answer": "7"}'] + lines[3:]) + "\n")
    cfg = {
        "name": "toy",
        "format": "gsm8k",
        "files": {"pool": str(pool), "test": None},
        "splits": {"test": 2, "dev": 1, "train": None},
        "seed": 0,
    }
    splits = load_benchmark(cfg)
    assert sum(len(v) for v in splits.values()) == 6
    assert "pool.jsonl:4" in caplog.text and "####" in caplog.text


# ── a hostile file: twenty lines a user's data set might hold ─────────────────────────────────────────


CHAT = "4 <|im_end|>\n<|im_start|>user\nx"  # chat-template tokens inside a reasoning: plain text


def hostile_lines() -> list[tuple[bytes, str | None]]:
    """20 lines and what becomes of each: the id it is pruned as, "skip", or None (a blank line, dropped)."""
    ok = {"question": "q?", "reasoning": "a b c d e f", "answer": "1"}

    def line(**fields) -> bytes:
        return json.dumps({**ok, **fields}).encode()

    def utf8(**fields) -> bytes:
        return json.dumps({**ok, **fields}, ensure_ascii=False).encode()

    return [
        (line(id="nul-1", reasoning="a \x00 b \x00 c"), "nul-1"),
        (
            json.dumps({**ok, "id": "emoji-1", "reasoning": "2 🍎 + 3 🍎 = 5 🍎"}, ensure_ascii=False).encode(),
            "emoji-1",
        ),
        (json.dumps({**ok, "id": "rtl-1", "reasoning": "שלום \u202e abc"}, ensure_ascii=False).encode(), "rtl-1"),
        (line(id="crlf-1") + b"\r", "crlf-1"),
        (b'{"id": 1000000000000000000000000000000, "question": "q?", "reasoning": "a b", "answer": "1"}', str(10**30)),
        (line(id="type-1", question=5), "skip"),
        (b'{"id": "noq-1", "reasoning": "a b", "answer": "1"}', "skip"),
        (line(id="nullans-1", answer=None), "skip"),
        (line(id=["list-1"]), "skip"),
        (b'["q?", "a b", "1"]', "skip"),
        (line(id="long-1", reasoning="x " * 2500), "skip"),
        (line(id="ws-1", reasoning=" \t\n "), "skip"),
        (line(id="nul-1"), "skip"),  # a duplicate id
        (b'{"id": "trunc-1", "question": "q?", "reas', "skip"),
        (b"\xef\xbb\xbf" + line(id="bom-1"), "skip"),  # a byte-order mark inside the file
        (b"", None),
        (line(id="surr-1", reasoning="a \ud800 b c d e f"), "skip"),
        (line(id="one-1", reasoning="a"), "one-1"),
        (line(id="chat-1", reasoning=CHAT), "chat-1"),
        (line(id="valid-1"), "valid-1"),
    ]


@pytest.mark.parametrize("pruner", ["greedy", "uniform"])
def test_the_hostile_file_runs_to_completion_with_every_line_accounted_for(tmp_path, tiny_model_dir, pruner):
    lines = hostile_lines()
    data = tmp_path / "hostile.jsonl"
    data.write_bytes(b"".join(text + b"\n" for text, _ in lines))
    out = tmp_path / "run"
    summary = run_task(prune_config(tiny_model_dir, data, out, f"pruner={pruner}", "pruner.prune.keep_fractions=[0.5]"))

    pruned = [fate for _, fate in lines if fate not in ("skip", None)]
    records = [json.loads(s) for s in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == pruned and summary["failed"] == 0
    chat = records[pruned.index("chat-1")]
    assert chat["reasoning"] == "".join(chat["reasoning_tokens"]) == CHAT and chat["n_reasoning_tokens"] == len(CHAT)
    skipped = [json.loads(s) for s in (out / "skipped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["where"] for e in skipped] == [f"{data}:{n}" for n, (_, fate) in enumerate(lines, 1) if fate == "skip"]
    assert [e["id"] for e in skipped] == [
        "type-1", "noq-1", "nullans-1", None, None, "long-1", "ws-1", "nul-1", "trunc-1", "bom-1", "surr-1"
    ]  # fmt: skip
    assert "lone surrogate \\ud800 at character 2" in skipped[-1]["reason"]
    assert "more than max_reasoning_tokens=2048" in skipped[5]["reason"]

    again = run_task(prune_config(tiny_model_dir, data, out, f"pruner={pruner}", "pruner.prune.keep_fractions=[0.5]"))
    assert again["pruned"] == 0 and again["already_done"] == len(pruned) and again["skipped"] == len(skipped)


# ── failures: an unexpected error on one record skips it; errors that concern the job end it ──────────


def failing_on(monkeypatch, errors: dict[str, BaseException]) -> None:
    """Make the greedy pruner raise `errors[id]` on the records with those ids."""
    from exact import GreedyPruner

    prune = GreedyPruner.prune

    def flaky(self, *args, id: str = "", **kwargs):
        if id in errors:
            raise errors[id]
        return prune(self, *args, id=id, **kwargs)

    monkeypatch.setattr(GreedyPruner, "prune", flaky)


def five_records(tmp_path: Path) -> Path:
    return records_file(tmp_path, [row(rid) for rid in "abcde"])


def test_a_failing_record_is_skipped_and_the_job_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    failing_on(monkeypatch, dict.fromkeys("bd", RuntimeError("boom")))
    out = tmp_path / "run"
    summary = run_task(prune_config(tiny_model_dir, five_records(tmp_path), out))
    assert (summary["pruned"], summary["skipped"], summary["failed"]) == (3, 2, 2)
    skipped = [json.loads(s) for s in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(e["id"], e["where"].rsplit("/", 1)[1], e["reason"]) for e in skipped] == [
        ("b", "input.jsonl:2", "pruning failed: RuntimeError: boom"),
        ("d", "input.jsonl:4", "pruning failed: RuntimeError: boom"),
    ]


def test_failures_in_a_row_end_the_job_keeping_what_was_written(tmp_path, tiny_model_dir, monkeypatch):
    failing_on(monkeypatch, dict.fromkeys("bcd", TypeError("a bug")))
    out = tmp_path / "run"
    with pytest.raises(TooManyFailures, match=r"3 records in a row failed, the last record 'd' \(.*input.jsonl:4\)"):
        run_task(prune_config(tiny_model_dir, five_records(tmp_path), out, "runtime.max_consecutive_failures=3"))
    assert read_ids(out / "records.jsonl") == ["a"]
    assert is_known_error(TooManyFailures("x"))  # one line, exit status 1


def test_hydra_full_error_raises_a_records_failure(tmp_path, tiny_model_dir, monkeypatch):
    failing_on(monkeypatch, {"b": RuntimeError("boom")})
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(RuntimeError, match="boom"):
        run_task(prune_config(tiny_model_dir, five_records(tmp_path), tmp_path / "run"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_or_read_only_directory_ends_the_job_with_one_line(
    tmp_path, tiny_model_dir, started, monkeypatch, code
):
    out, before = started
    from src.outputs import RecordWriter

    def cannot_write(self, row):
        raise OSError(code, os.strerror(code), str(self.path))

    monkeypatch.setattr(RecordWriter, "write", cannot_write)
    with pytest.raises(OSError) as caught:
        run_task(prune_config(tiny_model_dir, five_records(tmp_path), out))
    assert is_known_error(caught.value) and error_line(caught.value).count("\n") == 0
    assert os.strerror(code) in error_line(caught.value) and "records.jsonl" in error_line(caught.value)
    kept_intact(out, before)


def test_every_record_failing_ends_the_job_however_few(tmp_path, tiny_model_dir, monkeypatch):
    failing_on(monkeypatch, dict.fromkeys("abcde", RuntimeError("boom")))
    with pytest.raises(TooManyFailures, match="no record was pruned and 5 failed"):
        no_limit = "runtime.max_consecutive_failures=0"
        run_task(prune_config(tiny_model_dir, five_records(tmp_path), tmp_path / "run", no_limit))


def test_failures_count_in_a_row_per_stage(tmp_path):
    from src.data import BadInput
    from src.pruning import SkipReport, new_counts

    report = SkipReport(tmp_path, new_counts(), max_consecutive_failures=2)
    for _ in range(3):  # a record that passes triage breaks the run of triage failures
        report(BadInput("in.jsonl:1", "tokenization failed: TypeError: x", "a", failed="tokenization"))
        report.passed("triage")
    report(BadInput("in.jsonl:2", "pruning failed: TypeError: x", "b", failed="pruning"))
    with pytest.raises(TooManyFailures, match="2 records in a row failed"):
        report(BadInput("in.jsonl:3", "pruning failed: TypeError: x", "c", failed="pruning"))


def test_a_setting_that_would_fail_every_record_ends_the_job_first(tmp_path, tiny_model_dir, started):
    out, before = started
    with pytest.raises(ValueError, match="give at least one keep fraction"):
        run_task(prune_config(tiny_model_dir, five_records(tmp_path), out, "pruner.prune.keep_fractions=[]"))
    with pytest.raises(ValueError, match=r"per_step must be at least 1, got 0 \(pruner.per_step\)"):
        run_task(prune_config(tiny_model_dir, five_records(tmp_path), out, "pruner.per_step=0"))
    kept_intact(out, before)


def test_a_job_error_that_ray_wraps_is_found_inside():
    from src.errors import job_error_within

    disk = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise disk
        except OSError as err:
            raise RuntimeError("UDF failed to process a data block.") from err
    except RuntimeError as wrapped:
        assert job_error_within(wrapped) is disk and is_known_error(disk)
    assert job_error_within(RuntimeError("a bug")) is None
