"""Analyses on small pruning runs: retention, rank dynamics, cost fits, demo export, and the jobs end to end."""

from __future__ import annotations

import json

import pytest

from src.analysis.cost import cost_scaling, power_law
from src.analysis.dynamics import rank_dynamics, transition_hits
from src.analysis.retention import distribution, retention
from src.analysis.runs import read_runs
from src.api import compose_config
from src.run import run_task
from tests.test_run import prune_config, records_file, row


def record(rid: str = "r", order=(3, 0, 2, 1, 4), n: int = 5, **extra) -> dict:
    tokens = ["3", " +", " 4", " =", " 7"][:n]
    return {
        "id": rid,
        "n_reasoning_tokens": n,
        "reasoning_tokens": tokens,
        "deletion_order": list(order),
        "reasoning": "".join(tokens),
        "question": "Q?",
        **extra,
    }


def test_retention_pools_category_counts_per_keep_fraction():
    rec = record(order=[3, 0])  # pruned to keep 0.6 only
    cats = {"r": ["SymbMath", "SymbMath", "SymbMath", "Grammar", "SymbMath"]}
    result = retention([rec], cats, [1.0, 0.8, 0.6, 0.4])
    assert result["records"] == [1, 1, 1, 0]
    assert result["retention"]["Grammar"] == [1.0, 0.0, 0.0, None]
    assert result["retention"]["SymbMath"] == [1.0, 1.0, 0.75, None]
    assert result["retention"]["CoRef"] == [None, None, None, None]
    assert distribution([rec], cats)["SymbMath"] == 0.8


def test_hit_at_s_compares_local_frozen_and_random_rankings():
    # step 0 ranks 4 > 3 > 2 > 1 > 0 (J after deletion); greedy deletes 4 then, re-ranked, 0 and 1.
    steps = [
        [[0, -5.0], [1, -4.0], [2, -3.0], [3, -2.0], [4, -1.0]],
        [[0, -1.0], [1, -2.0], [2, -9.0], [3, -9.0]],
        [[1, -1.0], [2, -9.0], [3, -9.0]],
    ]
    rec = record(order=[4, 0, 1], n=5, step_scores=steps)
    hits = transition_hits(rec, 0.8, 0.4)  # deletions 1..3: S = {0, 1}, alive = {0, 1, 2, 3}
    assert hits == {"local": 1.0, "frozen": 0.0, "random": 0.5}
    assert transition_hits(rec, 1.0, 0.8) == {"local": 1.0, "frozen": 1.0, "random": 0.2}
    assert transition_hits(record(order=[4]), 1.0, 0.8) is None  # no step scores
    assert [r["transition"] for r in rank_dynamics([rec], [0.8, 0.4])["transitions"]] == ["1→0.8", "0.8→0.4"]
    with pytest.raises(ValueError, match="record_scores=true"):
        rank_dynamics([record()], [0.8])


def test_power_law_recovers_the_exponent():
    fit = power_law([10, 20, 40, 80], [3 * n**2.5 for n in (10, 20, 40, 80)])
    assert (
        fit["exponent"] == pytest.approx(2.5) and fit["prefactor"] == pytest.approx(3) and fit["r2"] == pytest.approx(1)
    )
    assert power_law([10, 10], [1, 2]) is None


def test_read_runs_names_bad_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record()) + "\n{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_runs([str(bad)])
    with pytest.raises(FileNotFoundError, match="no records"):
        read_runs([str(tmp_path / "missing")])
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(record(method="greedy")) + "\n")
    assert list(read_runs([str(good), str(good)])) == ["greedy", "greedy-2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A greedy run with step scores and a uniform run, on the same three records."""
    tmp = tmp_path_factory.mktemp("analysis")
    data = records_file(tmp, [row("a", "2 + 2 = 4, so 4."), row("b", "Two plus two is four."), row("c", "4 = 2 * 2.")])
    for method in ("greedy", "uniform"):
        run_task(
            prune_config(
                tiny_model_dir,
                data,
                tmp / method,
                f"pruner={method}",
                "pruner.prune.keep_fractions=[0.9,0.5]",
                *(["pruner.prune.record_scores=true"] * (method == "greedy")),
            )
        )
    return {"greedy": str(tmp / "greedy"), "uniform": str(tmp / "uniform")}


@pytest.mark.parametrize(
    "job,files",
    [
        ("analysis_categories", ["retention.png", "distribution.png", "categories.json"]),
        ("analysis_cost", ["cost.png", "cost.json"]),
        ("viewer", ["viewer.html"]),
        ("export_demo", ["demo-greedy.jsonl", "demo-uniform.jsonl"]),
    ],
)
def test_analysis_jobs_write_their_outputs(tmp_path, runs, job, files):
    runs_arg = "{" + ", ".join(f"{k}: {v}" for k, v in runs.items()) + "}"
    run_task(compose_config(f"+experiment={job}", f"analysis.runs={runs_arg}", f"output_dir={tmp_path}", "logger=none"))
    for name in files:
        assert (tmp_path / name).stat().st_size > 0, name
    if job == "analysis_categories":
        numbers = json.loads((tmp_path / "categories.json").read_text())
        assert set(numbers) == {"greedy", "uniform"}
        assert all(v in (1.0, None) for v in (c[0] for c in numbers["greedy"]["retention"]["retention"].values()))
    if job == "export_demo":
        rows = [json.loads(line) for line in (tmp_path / "demo-greedy.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == ["a", "b", "c"] and all(r["reason_tokens_json"] for r in rows)


def test_dynamics_job_reads_step_scores(tmp_path, runs):
    cfg = compose_config(
        "+experiment=analysis_dynamics",
        f"analysis.runs=[{runs['greedy']}]",
        "analysis.keep_fractions=[0.9,0.5]",
        f"output_dir={tmp_path}",
        "logger=none",
    )
    numbers = run_task(cfg)
    rows = numbers["greedy"]["transitions"]
    assert [r["transition"] for r in rows] == ["1→0.9", "0.9→0.5"] and all(0 <= r["local"] <= 1 for r in rows)
    assert (tmp_path / "dynamics.png").exists()


def test_cost_scaling_of_a_run(runs):
    result = cost_scaling(read_runs([runs["greedy"]])["greedy"])
    assert result["scorer"] == "packed" and len(result["points"]) == 3
    assert result["fit"]["tokens_processed"]["exponent"] > 0
