"""Hydra experiments compose, and `+experiment=prune` runs end to end, resumes, and skips bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from src.api import compose_config, load_pruner
from src.run import run_task

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


def targets(node) -> list[str]:
    """Every `_target_` in a config container."""
    if isinstance(node, dict):
        return ([node["_target_"]] if "_target_" in node else []) + [t for v in node.values() for t in targets(v)]
    return [t for v in node for t in targets(v)] if isinstance(node, list) else []


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_its_targets_exist(name):
    cfg = compose_config(f"+experiment={name}", "output_dir=/tmp/unused")
    assert cfg.task and cfg.logger._target_
    found = targets(OmegaConf.to_container(cfg))
    assert found and all(callable(get_object(target)) for target in found)
    if "pruner" in cfg:
        assert callable(get_object(cfg.pruner._target_))


def test_experiments_compose_only_the_groups_they_use():
    pruning = {"model", "data", "pruner", "scorer"}
    assert pruning <= set(compose_config("+experiment=prune")) and "surrogate" not in compose_config(
        "+experiment=prune"
    )
    assert "surrogate" in compose_config("+experiment=train_surrogate", "output_dir=/tmp/unused")
    for name in ("viewer", "export_demo", "analysis_categories", "generate"):
        assert not pruning & set(compose_config(f"+experiment={name}")), name


def test_demo_experiment_reads_like_the_demo():
    cfg = compose_config("+experiment=demo")
    assert cfg.model.path == "embedded:smollm2" and cfg.data.path == "demo"
    assert list(cfg.pruner.prune.keep_fractions) == [0.5] and cfg.show_chains


def records_file(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"".join((json.dumps(r).encode() if isinstance(r, dict) else r) + b"\n" for r in rows))
    return path


def prune_overrides(tiny_model_dir: str, data: Path, *extra: str) -> list[str]:
    """The overrides of a quiet prune job of `data` on the tiny model, keep 0.5; for the command line too."""
    return [
        "+experiment=prune",
        "model=hf",
        f"model.path={tiny_model_dir}",
        "data=jsonl",
        f"data.path={data}",
        "logger=none",
        "runtime.progress=false",
        "pruner.prune.keep_fractions=[0.5]",
        *extra,
    ]


def prune_config(tiny_model_dir: str, data: Path, out: Path, *extra: str):
    return compose_config(*prune_overrides(tiny_model_dir, data, f"output_dir={out}", *extra))


def row(rid: str, reasoning: str = "2 + 2 = 4.") -> dict:
    return {"id": rid, "question": "What is 2 + 2?", "reasoning": reasoning, "answer": "4", "gold": "4"}


def read_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_prune_runs_resumes_and_skips_bad_records(tmp_path, tiny_model_dir):
    rows = [
        row("a"),
        b'{"id": "broken", ',
        row("b", reasoning=""),
        row("c", reasoning="x" * 40),
        row("a"),
        row("d"),
    ]
    data, out = records_file(tmp_path, rows), tmp_path / "run"

    first = run_task(prune_config(tiny_model_dir, data, out, "data.limit=1"))
    assert first["pruned"] == 1 and read_ids(out / "records.jsonl") == ["a"]

    second = run_task(prune_config(tiny_model_dir, data, out, "data.max_reasoning_tokens=30"))
    assert second["pruned"] == 1 and second["already_done"] == 1 and second["skipped"] == 4
    assert read_ids(out / "records.jsonl") == ["a", "d"]
    reasons = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [r["reason"].split(" (")[0].split(",")[0] for r in reasons] == [
        "not valid JSON",
        "empty reasoning",
        "reasoning has 40 tokens",
        "duplicate id",
    ]
    assert [r["where"].rsplit("/", 1)[-1] for r in reasons] == [f"input.jsonl:{line}" for line in (2, 3, 4, 5)]
    assert [r["id"] for r in reasons] == ["broken", "b", "c", "a"]  # what merge reads; read from a torn line too
    assert reasons[3]["reason"].endswith("input.jsonl:1)")  # a duplicate names both places

    third = run_task(prune_config(tiny_model_dir, data, out, "data.max_reasoning_tokens=30"))
    assert third["pruned"] == 0 and third["already_done"] == 2
    assert len((out / "skipped.jsonl").read_text().splitlines()) == 4
    assert read_ids(out / "records.jsonl") == ["a", "d"]
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert record["gold"] == "4" and record["pruned"]["0.5"]


def test_prune_logs_to_offline_wandb(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    data, out = records_file(tmp_path, [row("a")]), tmp_path / "run"
    cfg = prune_config(tiny_model_dir, data, out, "logger=wandb")
    assert run_task(cfg)["pruned"] == 1
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def test_load_pruner_from_overrides(tiny_model_dir):
    pruner = load_pruner("model=hf", f"model.path={tiny_model_dir}", "pruner.objective=answer", "scorer=naive")
    assert pruner.scorer.name == "naive" and pruner.scorer.objective_name == "answer"
    assert pruner.prune("q", "a b c d", "x", keep_fractions=[0.5]).at(0.5)


def test_unknown_task_is_named():
    cfg = compose_config("task=fly", "output_dir=/tmp/unused")
    with pytest.raises(ValueError, match="unknown task 'fly'"):
        run_task(cfg)


def demo_config(tmp_path: Path, tiny_model_dir: str, max_reasoning_tokens: int):
    """`+experiment=demo` on the tiny model, with a linear surrogate saved for it."""
    from conftest import tiny_llama
    from surrogate.models import Surrogate

    model = tiny_llama()
    n_features = model.config.num_hidden_layers * model.config.num_attention_heads
    surrogate = Surrogate(n_features, "linear", residual=True, horizon=2)
    surrogate.save(tmp_path / "s.pt", meta={"pruner": tiny_model_dir})
    return compose_config(
        "+experiment=demo", "model=hf", f"model.path={tiny_model_dir}", "data.limit=2", "logger=none",
        "runtime.progress=false", f"output_dir={tmp_path / 'run'}", f"demo.hybrid.surrogate={tmp_path / 's.pt'}",
        f"data.max_reasoning_tokens={max_reasoning_tokens}",
    )  # fmt: skip


def test_demo_task_compares_exact_and_hybrid(tmp_path, tiny_model_dir, capsys):
    summary = run_task(demo_config(tmp_path, tiny_model_dir, 200))
    assert summary["pruned"] == 2 and summary["hybrid"]["speedup"] > 0
    assert len(read_ids(tmp_path / "run" / "hybrid.jsonl")) == 2
    printed = capsys.readouterr().out
    assert "before:" in printed and "after:" in printed and "faster" in printed and "remembers" in printed
    assert "its top 4 a step (a fixed k)" in printed  # an uncalibrated surrogate: scorer=hybrid's k_min
    assert "the kept token on each side of the last deletion" in printed  # policy.refresh
    assert "reruns f_2(q) only within 6 places of the last deletion" in printed  # policy.lookahead_window


def test_demo_with_every_record_skipped_skips_the_hybrid(tmp_path, tiny_model_dir, capsys):
    summary = run_task(demo_config(tmp_path, tiny_model_dir, 5))  # every demo chain is longer than 5 tokens
    assert summary["pruned"] == 0 and summary["skipped"] == 2 and "hybrid" not in summary
    assert "Skipping the hybrid comparison: no record was pruned." in capsys.readouterr().out


def test_demo_runs_the_model_free_hybrid_without_a_surrogate_for_the_model(tmp_path, tiny_model_dir, capsys):
    cfg = compose_config(
        "+experiment=demo", "model=hf", f"model.path={tiny_model_dir}", "data.limit=1", "logger=none",
        "runtime.progress=false", f"output_dir={tmp_path / 'run'}", "data.max_reasoning_tokens=200",
    )  # fmt: skip
    summary = run_task(cfg)
    assert summary["pruned"] == 1 and summary["hybrid"]["mean_jaccard"] is not None
    assert "Hybrid: the model-free prior f_4(q) (no learned surrogate) ranks" in capsys.readouterr().out


def test_demo_compare_false_runs_exact_only(tmp_path, tiny_model_dir):
    cfg = demo_config(tmp_path, tiny_model_dir, 200)
    cfg.demo.compare = False
    summary = run_task(cfg)
    assert summary["pruned"] == 2 and "hybrid" not in summary
    assert not (tmp_path / "run" / "hybrid.jsonl").exists()
