"""`+experiment=bench_exact`, `bench_memory` and `bench_long_chain` run on a tiny model and report what they measure."""

from __future__ import annotations

import json

import pytest

from src.api import compose_config
from src.checkpoint import PartialStates
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
    assert report["packed_over_naive_tokens_per_s"] > 0


def test_bench_exact_stops_after_steps(tmp_path, tiny_model_dir):
    """`bench.steps` times the first deletions of a chain too long to prune whole with naive."""
    rows = [{"id": "r0", "question": "How many?", "reasoning": "1 + 1 = 2 apples, and 2 + 2 = 4 pears.", "answer": "4"}]
    cfg = on_tiny_chains(
        "+experiment=bench_exact",
        tmp_path,
        tiny_model_dir,
        rows,
        "bench.steps=2",
        "data.reasoning_tokens=null",
        "bench.float64_check=false",
        "bench.throughput.seq_len=16",
        "bench.throughput.batch_sizes=[1]",
        "bench.throughput.repeats=1",
    )
    report = run_task(cfg)
    assert {run["deletions"] for run in report["scorers"].values()} == {2}
    assert report["identical_deletion_orders"] is True


def long_chain_config(tmp_path, tiny_model_dir, experiment: str, *overrides: str):
    rows = [
        {"id": f"r{i}", "question": "How many?", "reasoning": f"{i} + {i} = {2 * i} apples.", "answer": "2"}
        for i in range(6)
    ]
    return on_tiny_chains(
        f"+experiment={experiment}",
        tmp_path,
        tiny_model_dir,
        rows,
        "bench.reasoning_tokens=45",
        "scorer.surrogate=first_order@2",  # no surrogate is trained for the tiny model
        *overrides,
    )


def test_bench_memory_prunes_records_joined_into_one_long_chain(tmp_path, tiny_model_dir):
    report = run_task(long_chain_config(tmp_path, tiny_model_dir, "bench_memory", "bench.steps=2"))
    assert json.loads((tmp_path / "out" / "bench_long_chain.json").read_text()) == report
    assert 45 <= report["n_reasoning_tokens"] < 70 and report["steps"] == 2 and report["scorer"] == "hybrid"
    assert 0 < report["peak_rss_gb_model_loaded"] <= report["peak_rss_gb"]
    assert report["exact_checks"]["steps"] == [] and report["exact_checks"]["hit_rate"] is None


class Killed(Exception):
    """Raised after a chosen number of saved states, as a kill would end the run."""


def test_bench_long_chain_checks_steps_exactly_and_continues_a_killed_run(tmp_path, tiny_model_dir, monkeypatch):
    overrides = ("bench.keep=0.8", "bench.exact_checks=2", "runtime.checkpoint_every_s=0")
    cfg = long_chain_config(tmp_path, tiny_model_dir, "bench_long_chain", *overrides)
    report = run_task(cfg)
    n, steps = report["n_reasoning_tokens"], report["steps"]
    assert steps == n - round(0.8 * n) == report["steps_this_process"]
    checks = report["exact_checks"]
    assert checks["steps"] == [steps // 4, 3 * steps // 4] and 0 <= checks["hit_rate"] <= 1
    assert all(r >= 0 for r in checks["regret_nats"]) and all(t > 0 for t in checks["tokens"])
    exact = report["exact_packed_tokens_same_path"]  # what exact greedy would spend along the same path
    assert exact > report["tokens"] and report["fewer_tokens_than_exact"] == round(exact / report["tokens"], 2)
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert len(record["deletion_order"]) == steps and not any((tmp_path / "out" / "partial").iterdir())

    # Killed after 5 steps, the rerun continues inside the chain and finishes the same record.
    saver = PartialStates.saver

    def dies_after_5(self, rid, key):
        save, saved = saver(self, rid, key), []

        def save_then_die(state):
            save(state)
            saved.append(1)
            if len(saved) == 5:
                raise Killed

        return save_then_die

    with monkeypatch.context() as patch:
        patch.setattr(PartialStates, "saver", dies_after_5)
        with pytest.raises(Killed):
            run_task(cfg)
    running = json.loads((tmp_path / "out" / "progress.json").read_text())  # the numbers of the last step it showed
    assert running["finished"] is False and running["steps"] == 4 and running["peak_rss_gb"] > 0
    assert running["exact_checks"]["steps"] == [steps // 4]
    again = run_task(cfg)
    assert json.loads((tmp_path / "out" / "progress.json").read_text()) == {**again, "finished": True}
    assert again["steps"] == steps and again["steps_this_process"] == steps - 5
    resumed = json.loads((tmp_path / "out" / "record.json").read_text())
    assert resumed["deletion_order"] == record["deletion_order"]
    assert [(c["step"], c["scores"]) for c in resumed["exact_checks"]] == [
        (c["step"], c["scores"]) for c in record["exact_checks"]
    ]
