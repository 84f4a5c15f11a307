"""A killed greedy run continues inside the record it was on and finishes the same record as an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from test_greedy import segments
from test_run import prune_overrides, records_file, row

from exact.greedy import ExactChecks, GreedyTrace, greedy_prune
from exact.scorers import NaiveScorer, PackedScorer
from src.api import build_pruner, compose_config
from src.checkpoint import PartialStates, file_name, fingerprint
from src.run import run_task

ROOT = Path(__file__).resolve().parents[1]

SCORERS = {"naive": NaiveScorer, "packed": PackedScorer}


class Stop(Exception):
    """Raised from `on_state` to end a run at a chosen round, as a kill would."""


def saved_after(scorer, seg, deletions: int, rounds: int, **options) -> GreedyTrace:
    """The state a run reported after `rounds` scoring rounds, through JSON as the prune task saves it."""
    saved = []

    def on_state(state: GreedyTrace) -> None:
        saved.append(json.dumps(asdict(state)))
        if len(saved) == rounds:
            raise Stop

    with pytest.raises(Stop):
        greedy_prune(scorer, seg, deletions, on_state=on_state, **options)
    return GreedyTrace(**json.loads(saved[-1]))


@pytest.mark.parametrize("scorer", ["naive", "packed"])
@pytest.mark.parametrize("per_step", [1, 2])
@pytest.mark.parametrize("rounds", [1, 4])  # with per_step 2, round 4 is the last: only the final J remains
def test_resumed_greedy_equals_an_uninterrupted_run(llama, scorer, per_step, rounds):
    seg, deletions = segments(0, n=10), 8
    options = {"record_scores": True, "per_step": per_step}
    full = greedy_prune(SCORERS[scorer](llama, token_budget=64), seg, deletions, **options)
    saved = saved_after(SCORERS[scorer](llama, token_budget=64), seg, deletions, rounds, **options)
    assert 0 < len(saved.deletion_order) <= deletions

    fresh = SCORERS[scorer](llama, token_budget=64)  # as in a new process
    resumed = greedy_prune(fresh, seg, deletions, resume=saved, **options)
    assert resumed.deletion_order == full.deletion_order
    assert resumed.step_objective == full.step_objective
    assert resumed.step_scores == full.step_scores
    assert resumed.forward_passes == full.forward_passes
    # A fresh packed scorer runs the prompt once more before its first base pass.
    rerun = len(seg.prompt) - 1 if scorer == "packed" and len(saved.deletion_order) < deletions else 0
    assert resumed.tokens_processed == full.tokens_processed + rerun
    assert resumed.wall_s >= saved.wall_s


def test_a_resumed_run_keeps_its_exact_checks(llama):
    seg, deletions = segments(1, n=10), 8

    def checks() -> ExactChecks:  # steps 1, 3, 5, 7, by a fresh packed scorer each run
        return ExactChecks.spread(PackedScorer(llama), 4, deletions)

    full = greedy_prune(NaiveScorer(llama), seg, deletions, checks=checks())
    saved = saved_after(NaiveScorer(llama), seg, deletions, 3, checks=checks())
    assert [c["step"] for c in saved.exact_checks] == [1]
    resumed = greedy_prune(NaiveScorer(llama), seg, deletions, resume=saved, checks=checks())
    # The same checks; a fresh packed scorer runs the prompt once more, so their token counts may differ.
    same = [(c["step"], c["scores"]) for c in full.exact_checks]
    assert [(c["step"], c["scores"]) for c in resumed.exact_checks] == same


@pytest.mark.parametrize(
    "state, match",
    [
        (GreedyTrace([1], [0.0, 0.0], None), "lacks step scores"),
        (GreedyTrace([1, 1], [0.0, 0.0, 0.0], []), "not part of"),
        (GreedyTrace([1], [0.0], []), "1 objectives for 1 deletions"),
    ],
)
def test_inconsistent_saved_state_is_refused(llama, state, match):
    with pytest.raises(ValueError, match=match):
        greedy_prune(NaiveScorer(llama), segments(0, n=6), 4, record_scores=True, resume=state)


def test_partial_states_save_load_and_refuse_other_inputs(tmp_path, caplog):
    partials = PartialStates(tmp_path, every_s=0)
    state = GreedyTrace([3, 0], [-9.5, -9.25, None], [[[0, -9.3]], [[0, -9.25]]], 120, 4, 0.5)
    partials.saver("a/b", "key")(state)
    assert [p.name for p in (tmp_path / "partial").iterdir()] == [file_name("a/b")]
    assert partials.load("a/b", "key") == state
    assert partials.load("missing", "key") is None

    with caplog.at_level(logging.WARNING):
        assert partials.load("a/b", "other key") is None  # its work is not lost: set aside, not overwritten
        stale = tmp_path / "partial-stale" / file_name("a/b")
        assert not partials.path("a/b").exists() and PartialStates(tmp_path).load("a/b", "key") is None
        stale.replace(partials.path("a/b"))
        assert partials.load("a/b", "key") == state
        partials.path("a/b").write_text('{"id": "a/b", "fingerprint": "key", "state": {"deletion')
        assert partials.load("a/b", "key") is None
    assert "another input" in caplog.text and "unreadable" in caplog.text

    partials.remove("a/b")
    assert not any((tmp_path / "partial").iterdir())
    PartialStates(tmp_path, every_s=3600).saver("c", "key")(state)  # too soon after the record began
    assert not partials.path("c").exists()


def test_file_names_are_safe_and_distinct():
    names = {file_name(rid) for rid in ["a/b", "a_b", "../x", "ü"]}
    assert len(names) == 4 and not any("/" in name for name in names)


def test_fingerprint_covers_the_input_and_settings():
    cfg = compose_config("+experiment=prune", "output_dir=/tmp/unused")
    other = compose_config("+experiment=prune", "output_dir=/tmp/unused", "pruner.prune.prune_to_end=true")
    item = row("a")
    assert fingerprint(item, cfg) == fingerprint(dict(item), cfg)
    assert fingerprint(item, cfg) != fingerprint({**item, "reasoning": "2 + 2 = 5."}, cfg)
    assert fingerprint(item, cfg) != fingerprint(item, other)


REASONING = {  # r2 is the long one: the run is killed part-way through it
    "r1": "3 + 4 = 7.",
    "r2": "Tom has 12 apples; 12 * 4 = 48.",
    "r3": "48 + 7 = 55 in all.",
    "r4": "So 55.",
}


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_partial(process: subprocess.Popen, path: Path, deletions: int, timeout_s: float = 240) -> GreedyTrace:
    """Poll `path` until its state has at least `deletions` deletions; fail if the run ends or times out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed (see first.log)"
        try:
            state = GreedyTrace(**json.loads(path.read_text())["state"])
        except FileNotFoundError:
            state = None
        if state is not None and len(state.deletion_order) >= deletions:
            return state
        time.sleep(0.02)
    raise AssertionError(f"no partial state with {deletions} deletions in {path} after {timeout_s} s")


def without_timing(record: dict) -> dict:
    cost = {k: v for k, v in record["cost"].items() if k not in ("wall_s", "tokens_processed")}
    return {**record, "cost": cost}


def test_killed_prune_run_continues_inside_its_record(tmp_path, tiny_model_dir):
    data = records_file(tmp_path, [row(rid, text) for rid, text in REASONING.items()])
    overrides = prune_overrides(
        tiny_model_dir,
        data,
        "runtime.checkpoint_every_s=0",
        "runtime.num_threads=1",  # the same arithmetic in this process and in the runs
        "pruner.prune.prune_to_end=true",
        "pruner.prune.record_scores=true",
    )
    threads = torch.get_num_threads()
    try:
        reference_cfg = compose_config(*overrides, f"output_dir={tmp_path / 'reference'}")
        run_task(reference_cfg)
    finally:
        torch.set_num_threads(threads)
    expected = read_records(tmp_path / "reference" / "records.jsonl")

    run = tmp_path / "run"
    partials = PartialStates(run)
    command = [sys.executable, "-m", "src.run", *overrides, f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            killed_at = wait_for_partial(first, partials.path("r2"), deletions=4)
        finally:
            first.kill()  # SIGKILL: no cleanup of any kind
            first.wait()
    assert [r["id"] for r in read_records(run / "records.jsonl")] == ["r1"]
    assert len(killed_at.deletion_order) < len(REASONING["r2"])

    # A kill while r2's line was being written; one between writing r1 and removing its state; a stale r3 state.
    with (run / "records.jsonl").open("a") as records:
        records.write('{"id": "r2", "method": "greedy", "deletion_order": [4, 1')
    partials.saver("r1", "key")(killed_at)
    partials.saver("r3", "another input")(GreedyTrace([0], [-1.0, -2.0], [[[0, -2.0]]]))

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    logged = second.stdout + second.stderr
    assert "dropping the incomplete line" in logged and "record 'r2': continuing after" in logged
    assert "partial state of another input" in logged
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["pruned"], summary["already_done"], summary["continued"]) == (3, 1, 1)
    assert not any((run / "partial").iterdir())

    records = read_records(run / "records.jsonl")
    assert [r["id"] for r in records] == list(REASONING)
    assert [without_timing(r) for r in records] == [without_timing(r) for r in expected]
    r2, expected_r2 = records[1]["cost"], expected[1]["cost"]
    assert r2["wall_s"] >= round(killed_at.wall_s, 4)
    # The continued r2 ran its prompt once more (the packed scorer's prompt cache starts empty in a new process).
    item = row("r2", REASONING["r2"])
    prompt = build_pruner(reference_cfg).encode(item["question"], item["reasoning"], item["answer"]).prompt
    assert r2["tokens_processed"] == expected_r2["tokens_processed"] + len(prompt) - 1
    for record, reference in zip(records[2:], expected[2:]):
        assert record["cost"]["tokens_processed"] == reference["cost"]["tokens_processed"]
