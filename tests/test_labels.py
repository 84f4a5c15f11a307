"""Packed labels: no dataset text in the file, read back joined with their dataset, and bad joins named."""

from __future__ import annotations

import gzip
import json

import pytest

from src.api import compose_config
from src.labels import label_rows, labelled_ids, pack_labels, read_labels
from src.run import run_task

SOURCE = [
    {"id": f"r{i}", "question": f"How many {i}?", "reasoning": f"{i} + {i} = {2 * i} pens.", "answer": str(2 * i)}
    for i in range(4)
]


def labelled(record: dict, steps: int = 2) -> dict:
    scores = [[[j, -1.5 * j - 0.1234567891 * s] for j in range(5 - s)] for s in range(steps)]
    return {**record, "method": "greedy", "objective": "joint", "pruner": "m", "n_reasoning_tokens": 5,
            "deletion_order": [0, 1], "step_objective": [-3.0, -2.5, -2.4], "step_scores": scores,
            "cost": {"wall_s": 1.0}, "pruned": {"0.5": "x"}, "reasoning_tokens": ["a"] * 5}  # fmt: skip


def test_packed_labels_hold_no_text_and_read_back_joined(tmp_path):
    runs = tmp_path / "records.jsonl"
    runs.write_text("".join(json.dumps(labelled(r)) + "\n" for r in SOURCE[:3]))
    packed = tmp_path / "labels.jsonl.gz"
    assert pack_labels(label_rows([runs]), packed) == 3
    text = gzip.decompress(packed.read_bytes()).decode()
    assert "How many" not in text and "pens" not in text and "pruned" not in text
    assert pack_labels(label_rows([runs]), tmp_path / "again.jsonl.gz") == 3
    assert (tmp_path / "again.jsonl.gz").read_bytes() == packed.read_bytes()  # reproducible bytes

    back = read_labels([packed], lambda: iter(SOURCE))
    assert [r["id"] for r in back] == ["r0", "r1", "r2"]
    for got, source in zip(back, SOURCE):
        assert all(got[k] == source[k] for k in ("question", "reasoning", "answer"))
        assert got["deletion_order"] == [0, 1] and len(got["step_scores"]) == 2
        assert got["step_scores"][1][1][1] == pytest.approx(-1.5 - 0.1234567891, abs=1e-6)
    assert labelled_ids([packed]) == {"r0", "r1", "r2"}

    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps(labelled(SOURCE[3])) + "\n")
    merged = tmp_path / "labels.jsonl.gz"  # packed again onto itself, with a new run
    assert pack_labels(label_rows([merged, more]), merged) == 4
    assert [r["id"] for r in read_labels([merged], lambda: iter(SOURCE))] == ["r0", "r1", "r2", "r3"]
    assert pack_labels(label_rows([merged, runs, more]), tmp_path / "same.jsonl.gz") == 4  # packed part-way: once
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**labelled(SOURCE[0]), "deletion_order": [1, 0]}) + "\n")
    with pytest.raises(ValueError, match="'r0' is labelled twice, with different labels"):
        pack_labels(label_rows([merged, other]), tmp_path / "bad.jsonl.gz")


def test_bad_joins_name_the_record(tmp_path):
    packed = tmp_path / "labels.jsonl.gz"
    pack_labels([labelled(r) for r in SOURCE[:2]], packed)
    with pytest.raises(ValueError, match="give the dataset"):
        read_labels([packed])
    with pytest.raises(ValueError, match="record 'r1' .* is not in the dataset"):
        read_labels([packed], lambda: iter(SOURCE[:1]))
    changed = [SOURCE[0], {**SOURCE[1], "answer": "99"}]
    with pytest.raises(ValueError, match="record 'r1' .*text changed"):
        read_labels([packed], lambda: iter(changed))
    runs = tmp_path / "records.jsonl"
    runs.write_text(json.dumps(labelled(SOURCE[1])) + "\n")
    with pytest.raises(ValueError, match="record 'r1' is labelled twice"):
        read_labels([packed, runs], lambda: iter(SOURCE))
    runs.write_text(json.dumps(labelled(SOURCE[1])) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not valid JSON"):
        read_labels([runs])


def test_labelling_passes_over_ids_labelled_elsewhere(tmp_path, tiny_model_dir):
    data = tmp_path / "chains.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SOURCE))
    packed = tmp_path / "labels.jsonl.gz"
    pack_labels([labelled(r) for r in SOURCE[:2]], packed)
    cfg = compose_config(
        "+experiment=label", "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={data}",
        "data.reasoning_tokens=null", f"output_dir={tmp_path / 'run'}", "logger=none", "runtime.progress=false",
        f"runtime.done_from=[{packed}]",
    )  # fmt: skip
    summary = run_task(cfg)
    assert summary["pruned"] == 2 and summary["already_done"] == 2
    written = [json.loads(line)["id"] for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert written == ["r2", "r3"]
