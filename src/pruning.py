"""The prune job's per-record pieces, shared by both runtimes (one process: src/prune_job.py; Ray:
src/scale/ray_prune.py): which records are still to do, the call that prunes one, skip reports, and
the metrics logged per record.

Each record is pruned and written inside a record boundary (`at_record_boundary`): the record's failure
is reported in skipped.jsonl and the job goes on, unless src/errors.py says it ends the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from tqdm.auto import tqdm

from exact import GreedyPruner, InvalidInstance
from exact.greedy import check_regrets, hit_rate
from exact.keep import check_keep_fraction, n_deletions
from exact.result import PruneResult
from src.api import prune_options
from src.checkpoint import PartialStates, fingerprint
from src.data import BadInput, Record
from src.errors import FailureStreak, TooManyFailures
from src.outputs import json_line

log = logging.getLogger(__name__)
INPUT_FIELDS = ("id", "question", "reasoning", "answer")
T = TypeVar("T")


def new_counts() -> dict[str, int]:
    """The job's counts: pruned now, already done before, continued from a partial state, skipped (of which
    `failed`: an exception rather than bad input)."""
    return {"pruned": 0, "already_done": 0, "continued": 0, "skipped": 0, "failed": 0}


class SkipReport:
    """Reports skipped records: a warning, a line `{id, where, reason}` in the run's skipped.jsonl (rewritten
    by every run), the `skipped` and `failed` counts, and the failures that end a job (src/errors.py):
    `max_consecutive_failures` in a row at triage (reading, checking, measuring) or at pruning, or, at
    the end, some failures and nothing pruned."""

    def __init__(self, out: str | Path, counts: dict[str, int], max_consecutive_failures: int):
        self.path = Path(out) / "skipped.jsonl"
        self.path.unlink(missing_ok=True)  # every run reports its bad input afresh
        self.counts = counts
        self.streaks = {phase: FailureStreak(max_consecutive_failures) for phase in ("triage", "pruning")}

    def __call__(self, bad: BadInput) -> None:
        log.warning("skipping %s", bad)
        with self.path.open("ab") as handle:
            handle.write(json_line({"id": bad.id, "where": bad.where, "reason": bad.reason}))
        self.counts["skipped"] += 1
        if bad.failed:
            self.counts["failed"] += 1
            self.streaks["pruning" if bad.failed == "pruning" else "triage"].failed(str(bad))

    def passed(self, phase: str) -> None:
        """A record passed `phase` (triage or pruning): the failures there before it were not in a row."""
        self.streaks[phase].passed()

    def finish(self) -> None:
        """Raise TooManyFailures when records failed and none was pruned, now or before."""
        counts = self.counts
        if counts["failed"] and not counts["pruned"] and not counts["already_done"]:
            raise TooManyFailures(
                f"no record was pruned and {counts['failed']} failed: see {self.path}, "
                "or rerun with HYDRA_FULL_ERROR=1 for the traceback"
            )


def records_to_prune(
    items: Iterable[Record | BadInput],
    done: set[str],
    skip: SkipReport,
    counts: dict[str, int],
    partials: PartialStates,
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
            skip(BadInput(item.where, f"duplicate id (first at {seen[rid]})", rid))
            continue
        seen[rid] = item.where
        skip.passed("triage")
        if rid in done:
            partials.remove(rid)  # left behind by a kill between writing the record and removing its state
            counts["already_done"] += 1
        else:
            yield item


def advance(bar: tqdm):
    """A greedy `on_step` callback that moves `bar` to `done` of `total` deletions."""

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return on_step


def checkpointing(pruner, item: dict, cfg: DictConfig, partials: PartialStates) -> dict:
    """`prune` arguments that continue `item` from its saved state, if any, and save its new states.

    A static baseline finishes at once and gets none.
    """
    if not isinstance(pruner, GreedyPruner):
        return {}
    key = fingerprint(item, cfg)
    return {"resume": partials.load(item["id"], key), "on_state": partials.saver(item["id"], key)}


def check_prune_options(cfg: DictConfig) -> None:
    """Check the job's `pruner.prune` settings once, before any record is read: inside a record, a bad
    setting would fail every record instead of ending the job with one line."""
    options = prune_options(cfg)
    n_deletions(1, map(check_keep_fraction, options["keep_fractions"]), options.get("prune_to_end", False))


def prune_item(pruner, item: Record, cfg: DictConfig, partials: PartialStates, **options) -> tuple[PruneResult, bool]:
    """Prune one record with the job's `pruner.prune` settings, continuing its saved state if any; its other
    input fields are carried through. Returns the result and whether it continued a saved state."""
    rid = item["id"]
    checkpoint = checkpointing(pruner, item, cfg, partials)
    resumed = checkpoint.get("resume")
    if resumed is not None:
        log.info("record %r: continuing after %d deletions", rid, len(resumed.deletion_order))
    result = pruner.prune(
        item["question"],
        item["reasoning"],
        item["answer"],
        id=rid,
        extra={k: v for k, v in item.items() if k not in INPUT_FIELDS},
        **prune_options(cfg),
        **checkpoint,
        **options,
    )
    return result, resumed is not None


def at_record_boundary(item: Record, work: Callable[[], T]) -> T | BadInput:
    """`work()` on `item`, or the record's BadInput: an invalid instance, or its failure (an unexpected
    exception; src/errors.py, which raises the errors that end the job)."""
    try:
        return work()
    except InvalidInstance as err:
        return BadInput(item.where, str(err), item["id"])
    except Exception as err:
        return BadInput.from_error(err, item.where, item["id"], "pruning")


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
    if record.get("exact_checks"):
        regrets = check_regrets(record["deletion_order"], record["exact_checks"])
        metrics["record/check_hit_rate"] = hit_rate(regrets)
        metrics["record/check_regret_nats"] = sum(regrets) / len(regrets)
    return metrics
