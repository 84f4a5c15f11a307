"""Bad input at every entry point: a clear error naming the file and line or the record id, and
nothing already written is lost. Each job first writes a good record, then meets one kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.api import compose_config
from src.models import ModelNotFound
from src.run import run_task
from surrogate.models import Surrogate
from tests.test_run import prune_config, records_file, row


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
    "line,where,reason",
    [
        (b'{"id": "x", "question": "Q"', "bad.jsonl:2", "not valid JSON"),  # malformed JSONL
        (json.dumps({**row("x"), "reasoning": 7}).encode(), "record 'x'", "field 'reasoning' must be a string"),
        (json.dumps(row("x", reasoning="  ")).encode(), "record 'x'", "empty reasoning"),
        (json.dumps(row("x", reasoning="y" * 40)).encode(), "record 'x'", "more than max_reasoning_tokens=30"),
        (b'{"id": "x", "question": "caf\xe9"}', "bad.jsonl:2", "not valid UTF-8"),
    ],
    ids=["malformed-json", "wrong-type", "empty-reasoning", "over-long-reasoning", "non-utf8"],
)
def test_bad_record_is_named_and_skipped(tmp_path, tiny_model_dir, started, line, where, reason):
    out, before = started
    skipped = rerun_with(tmp_path, tiny_model_dir, out, line, "data.max_reasoning_tokens=30")
    assert len(skipped) == 1 and where in skipped[0]["where"] and reason in skipped[0]["reason"]
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
    with pytest.raises(ValueError, match="trained on the attention of 'Qwen/Qwen2.5-7B-Instruct'"):
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
