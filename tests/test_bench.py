"""`+experiment=bench_exact` and `bench_memory` run on a tiny model and report what they measure."""

from __future__ import annotations

import json

from src.api import compose_config
from src.run import run_task


def on_tiny_chains(experiment: str, tmp_path, model_dir: str, rows: list[dict], *overrides: str):
    """The config of `experiment` over the tiny model, the `rows` as its data and tmp_path/out as its output."""
    data = tmp_path / "chains.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("model=hf", f"model.path={model_dir}", "data=jsonl", f"data.path={data}")
    return compose_config(experiment, *common, f"output_dir={tmp_path / 'out'}", "runtime.progress=false", *overrides)


def test_bench_exact_reports_both_scorers(tmp_path, tiny_model_dir):
    rows = [
        {
            "id": f"r{i}",
            "question": "How many?",
            "reasoning": f"{i} + {i} = {2 * i} apples, so {2 * i}.",
            "answer": str(2 * i),
        }
        for i in range(3)
    ]
    cfg = on_tiny_chains(
        "+experiment=bench_exact",
        tmp_path,
        tiny_model_dir,
        rows,
        "data.limit=2",
        "data.reasoning_tokens=[5,40]",
        "bench.throughput.seq_len=16",
        "bench.throughput.batch_sizes=[1,2]",
        "bench.throughput.repeats=1",
    )
    report = run_task(cfg)
    assert json.loads((tmp_path / "out" / "bench_exact.json").read_text()) == report
    assert [r["id"] for r in report["records"]] == ["r0", "r1"]
    assert set(report["scorers"]) == {"naive", "packed"}
    assert report["identical_deletion_orders"] is True
    assert report["candidate_gap_nats"]["max"] < 1e-4 and report["candidate_gap_nats"]["candidates"] > 0
    assert report["naive_over_packed_tokens"] > 1
    reference = report["first_step_max_gap_nats"]
    assert reference["record"] == "r0" and reference["naive64_vs_packed64"] < 1e-9
    assert reference["naive32_vs_float64"] < 1e-4 and reference["packed32_vs_float64"] < 1e-4
    assert set(report["forward_tokens_per_s"]) == {"1", "2"} and report["packed_fraction_of_ceiling"] > 0


def test_bench_memory_prunes_records_joined_into_one_long_chain(tmp_path, tiny_model_dir):
    rows = [
        {"id": f"r{i}", "question": "How many?", "reasoning": f"{i} + {i} = {2 * i} apples.", "answer": "2"}
        for i in range(6)
    ]
    cfg = on_tiny_chains(
        "+experiment=bench_memory",
        tmp_path,
        tiny_model_dir,
        rows,
        "bench.reasoning_tokens=45",
        "bench.steps=2",
        "scorer.surrogate=first_order@2",  # no surrogate is trained for the tiny model
    )
    report = run_task(cfg)
    assert json.loads((tmp_path / "out" / "bench_memory.json").read_text()) == report
    assert 45 <= report["n_reasoning_tokens"] < 70 and report["steps"] == 2 and report["scorer"] == "hybrid"
    assert 0 < report["peak_rss_gb_model_loaded"] <= report["peak_rss_gb"] and report["tokens_per_step"] > 0
