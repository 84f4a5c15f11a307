"""The prune job's per-record pieces, shared by both runtimes (one process: src/prune_job.py; Ray:
src/scale/ray_prune.py): which records are still to do, the call that prunes one, skip reports, and
the metrics logged per record."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from exact import GreedyPruner
from exact.result import PruneResult
from src.api import prune_options
from src.checkpoint import PartialStates, fingerprint
from src.data import BadInput, Record

log = logging.getLogger(__name__)
INPUT_FIELDS = ("id", "question", "reasoning", "answer")


def new_counts() -> dict[str, int]:
    """The job's counts: pruned now, already done before, continued from a partial state, skipped."""
    return {"pruned": 0, "already_done": 0, "continued": 0, "skipped": 0}


def records_to_prune(
    items: Iterable[Record | BadInput], done: set[str], skip, counts: dict[str, int], partials: PartialStates
) -> Iterator[Record]:
    """The records still to prune. Bad input and repeated ids (named with both places) go to `skip`; ids in
    `done` count as already done."""
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, BadInput):
            skip(item)
            continue
        rid = item["id"]
        if rid in seen:
            skip(BadInput(f"record {rid!r} ({item.where})", f"duplicate id (first at {seen[rid]})"), record_id=rid)
            continue
        seen[rid] = item.where
        if rid in done:
            partials.remove(rid)  # left behind by a kill between writing the record and removing its state
            counts["already_done"] += 1
        else:
            yield item


def checkpointing(pruner, item: dict, cfg: DictConfig, partials: PartialStates) -> dict:
    """`prune` arguments that continue `item` from its saved state, if any, and save its new states.

    A static baseline finishes at once and gets none.
    """
    if not isinstance(pruner, GreedyPruner):
        return {}
    key = fingerprint(item, cfg)
    return {"resume": partials.load(item["id"], key), "on_state": partials.saver(item["id"], key)}


def prune_item(pruner, item: dict[str, Any], cfg: DictConfig, **options) -> PruneResult:
    """Prune one record with the job's `pruner.prune` settings; its other input fields are carried through."""
    return pruner.prune(
        item["question"],
        item["reasoning"],
        item["answer"],
        id=item["id"],
        extra={k: v for k, v in item.items() if k not in INPUT_FIELDS},
        **prune_options(cfg),
        **options,
    )


def report_skip(out: Path, bad: BadInput, counts: dict, record_id: str | None = None) -> None:
    """Bad input: a warning, a line in skipped.jsonl ({id, where, reason}), and the `skipped` count."""
    log.warning("skipping %s", bad)
    counts["skipped"] += 1
    line = {"id": record_id, "where": bad.where, "reason": bad.reason}
    with (out / "skipped.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def record_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The metrics logged per finished record, from its JSON."""
    cost, steps = record["cost"], record["step_objective"]
    metrics = {
        "record/n_reasoning_tokens": record["n_reasoning_tokens"],
        "record/deletions": len(record["deletion_order"]),
        "record/wall_s": cost["wall_s"],
    }
    if steps:
        metrics.update(
            {
                "record/objective_start": steps[0],
                "record/objective_end": steps[-1],
                "record/objective_drop": steps[0] - steps[-1],
            }
        )
    if "tokens_processed" in cost:
        metrics["record/tokens_per_s"] = cost["tokens_processed"] / max(cost["wall_s"], 1e-9)
    return metrics
