"""`+experiment=hybrid_prune` end to end on the tiny model: estimate, plan, label, train, compare, prune, report;
every stage reused by a rerun; a surrogate brought along; clear errors for what the data or budget cannot give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.api import compose_config
from src.label_plan import Chain, pick, strata
from src.run import run_task

REASONINGS = [
    "3 + 4 = 7, so 7 pens.",
    "2 * 5 = 10 apples.",
    "9 - 3 = 6 left.",
    "8 / 2 = 4 each.",
    "1 + 1 = 2 cats.",
    "6 + 6 = 12 eggs in all.",
    "10 - 7 = 3 birds.",
    "4 * 4 = 16 tiles here.",
    "5 + 9 = 14 cards.",
]


def hybrid_prune(tmp_path: Path, tiny_model_dir: str, *extra: str) -> dict:
    data = tmp_path / "chains.jsonl"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {"id": f"r{i}", "question": "How many?", "reasoning": r, "answer": str(i)} for i, r in enumerate(REASONINGS)
        ]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config(
        "+experiment=hybrid_prune", "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={data}",
        f"output_dir={tmp_path / 'run'}", "logger=none", "runtime.progress=false",
        "hybrid_prune.label.chains=5", "hybrid_prune.label.min_chains=2", "hybrid_prune.label.reasoning_tokens=[10,30]",
        "hybrid_prune.heldout.chains=1", "hybrid_prune.heldout.reasoning_tokens=[10,30]", "hybrid_prune.prune.limit=2",
        f"surrogate.feature_cache={tmp_path / 'features'}", "surrogate.max_steps=6", "surrogate.val_every_steps=2",
        "surrogate.groups_per_batch=4", "surrogate.hidden=16", *extra,
    )  # fmt: skip
    return run_task(cfg)


def test_the_whole_path_on_a_tiny_model(tmp_path, tiny_model_dir, capsys):
    result = hybrid_prune(tmp_path, tiny_model_dir)
    out = tmp_path / "run"
    estimate, plan, report = result["estimate"], result["plan"], result["report"]
    assert estimate["scoring_tokens_per_s"] > 0 and estimate["exact"]["tokens"] > 0 and estimate["hybrid"]["tokens"] > 0
    assert len(plan["label"]) == 5 and len(plan["heldout"]) == 1 and len(plan["rest"]) == 2
    assert not set(plan["label"]) & set(plan["heldout"]) and not set(plan["rest"]) & set(plan["label"])
    labelled = [json.loads(line) for line in (out / "label" / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in labelled) == sorted(plan["label"]) and all(r["step_scores"] for r in labelled)
    assert (out / "surrogate" / "surrogate.pt").exists() and (out / "dial.png").stat().st_size > 0
    assert result["compare"]["heldout"] == report["heldout"] and (out / "compare.json").exists()
    pruned = [json.loads(line) for line in (out / "pruned" / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in pruned) == sorted(plan["rest"]) and {r["method"] for r in pruned} == {"hybrid"}
    for name in ("learned", "model_free"):
        row = report["heldout"][name]
        assert row["speedup_tokens"] > 0 and 0 <= row["jaccard"]["0.5"] <= 1 and 0 <= row["step_agreement"] <= 1
    assert report["heldout"]["exact"]["jaccard"]["0.5"] == 1.0
    assert -1 <= report["surrogate"]["heldout_ranking"]["pearson"] <= 1 and report["surrogate"]["validation"]
    assert report["cost"]["label"]["records"] == 5 and report["cost"]["label"]["wall_s"] > 0
    assert report["cost"]["train_wall_s"]["total"] >= report["cost"]["train_wall_s"]["features"] > 0
    pruning = report["cost"]["pruned"]
    assert pruning["records"] == 2 and pruning["exact_tokens_from_cost_model"] > 0 and pruning["fewer_tokens"] > 0
    printed = capsys.readouterr().out
    assert "Estimate (" in printed and "Plan: label 5 chains" in printed and "model_free" in printed

    # A rerun reuses every stage: nothing is labelled, trained or pruned again.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl")} | {out / "surrogate" / "surrogate.pt": 0}
    before[out / "surrogate" / "surrogate.pt"] = (out / "surrogate" / "surrogate.pt").stat().st_mtime_ns
    again = hybrid_prune(tmp_path, tiny_model_dir)
    assert again["report"] == report and again["plan"] == plan
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    # Another plan's settings in the same directory are refused, naming what changed; nothing is lost.
    with pytest.raises(ValueError, match=r"plan.json was made with other settings \(hybrid_prune.label changed\)"):
        hybrid_prune(tmp_path, tiny_model_dir, "hybrid_prune.label.chains=4")
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    # Another hybrid setting only redoes the comparison.
    other = hybrid_prune(tmp_path, tiny_model_dir, "scorer.policy.epsilon=0.05")["report"]
    assert (
        other["settings"]["scorer"]["policy"]["epsilon"] == 0.05
        and report["settings"]["scorer"]["policy"]["epsilon"] == 0.02
    )
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # labels, records and surrogate untouched


def test_a_killed_labelling_stage_resumes_past_its_torn_last_line(tmp_path, tiny_model_dir):
    first = hybrid_prune(tmp_path, tiny_model_dir, "hybrid_prune.stop_after=label")
    labels = tmp_path / "run" / "label" / "records.jsonl"
    lines = labels.read_bytes().splitlines(keepends=True)
    labels.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])  # killed while writing its last record
    hybrid_prune(tmp_path, tiny_model_dir, "hybrid_prune.stop_after=label")
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(first["plan"]["label"])


def test_bad_records_are_named_and_left_out_of_the_plan(tmp_path, tiny_model_dir, caplog):
    data = tmp_path / "chains.jsonl"
    rows = [
        {"id": f"r{i}", "question": "How many?", "reasoning": r, "answer": str(i)} for i, r in enumerate(REASONINGS)
    ]
    bad = ['{"id": "broken", ', json.dumps(rows[1]), json.dumps({**rows[0], "id": "empty", "reasoning": ""})]
    data.write_text("\n".join([json.dumps(r) for r in rows] + bad) + "\n")
    result = hybrid_prune(tmp_path, tiny_model_dir, "hybrid_prune.stop_after=plan")
    assert result["estimate"]["lengths"]["chains"] == 9
    assert "chains.jsonl:10" in caplog.text and "record 'r1' (" in caplog.text and "duplicate id" in caplog.text
    assert "record 'empty'" in caplog.text


def test_a_surrogate_brought_along_skips_labelling_and_training(tmp_path, tiny_model_dir):
    first = hybrid_prune(tmp_path / "a", tiny_model_dir, "hybrid_prune.stop_after=train")
    assert "report" not in first and (tmp_path / "a" / "run" / "surrogate" / "surrogate.pt").exists()
    surrogate = tmp_path / "a" / "run" / "surrogate" / "surrogate.pt"
    brought = (tmp_path / "b", tiny_model_dir, f"hybrid_prune.surrogate={surrogate}")
    # The comparison on the held-out chains comes before the rest is pruned: its numbers say whether to.
    result = hybrid_prune(*brought, "hybrid_prune.stop_after=compare")
    assert result["compare"]["surrogate"]["file"] == str(surrogate) and not (tmp_path / "b" / "run" / "pruned").exists()
    result = hybrid_prune(*brought, "hybrid_prune.stop_after=prune")
    assert result["plan"]["label"] == [] and not (tmp_path / "b" / "run" / "label").exists()
    assert len(result["plan"]["rest"]) == 2 and (tmp_path / "b" / "run" / "pruned" / "records.jsonl").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hybrid_prune.heldout.chains=20"], "hybrid_prune.heldout.chains=20 asks for more chains than the 9"),
        (["hybrid_prune.label.chains=20"], "hybrid_prune.label.chains=20 asks for more chains than the 8"),
        (
            ["hybrid_prune.label.chains=null", "hybrid_prune.label.min_chains=8"],  # a quarter of exact on all
            r"labelling \d chains is too few to train a surrogate on .* be pruned exactly",
        ),
        (["hybrid_prune.stop_after=lunch"], "hybrid_prune.stop_after='lunch'"),
    ],
)
def test_what_the_data_or_budget_cannot_give_is_one_clear_error(tmp_path, tiny_model_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        hybrid_prune(tmp_path, tiny_model_dir, "hybrid_prune.stop_after=plan", *overrides)


def test_a_surrogate_for_another_model_is_refused_before_any_work(tmp_path, tiny_model_dir):
    smollm2 = Path(__file__).resolve().parents[1] / "surrogate" / "default" / "smollm2-residual.pt"
    with pytest.raises(ValueError, match="trained for the pruner model 'embedded:smollm2'"):
        hybrid_prune(tmp_path, tiny_model_dir, f"hybrid_prune.surrogate={smollm2}")
    assert not (tmp_path / "run" / "estimate.json").exists()


def test_labelling_subsets_spread_over_lengths_up_to_a_count_or_a_budget():
    chains = [Chain(f"c{n}", 5, n, 3) for n in range(10, 50)]
    assert [len(b) for b in strata(chains, 4)] == [10, 10, 10, 10]
    four = pick(chains, 4, bins=4)
    assert sorted(c.n // 10 for c in four) == [1, 2, 3, 4]  # one from each length bin
    priced = pick(chains, None, seconds=100.0, price=lambda c: c.n, bins=4)
    assert sum(c.n for c in priced) <= 100 and len(priced) >= 3
    assert pick(chains, 4, bins=4, seed=1) == pick(chains, 4, bins=4, seed=1)


def test_a_model_whose_attention_cannot_be_read_is_named_before_any_work(tmp_path, tiny_model_dir, monkeypatch):
    from surrogate import features

    monkeypatch.setattr(features, "_is_self_attention", lambda module: False)
    with pytest.raises(ValueError, match="cannot read the attention of LlamaForCausalLM.*first_order@4"):
        hybrid_prune(tmp_path, tiny_model_dir)
    assert not (tmp_path / "run" / "estimate.json").exists()
