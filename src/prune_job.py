"""The prune job (`+experiment=prune`): greedy-prune a data set into records.jsonl, resumable, skipping bad input.

A finished record is appended to records.jsonl; a record in progress keeps its partial state under
`partial/` (src/checkpoint.py), so a killed run continues inside the record it was on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from exact import PruneResult
from src.api import build_pruner, read_data, setup_runtime
from src.checkpoint import PartialStates
from src.data import BadInput, Record
from src.labels import labelled_ids
from src.outputs import RecordWriter
from src.pruning import (
    SkipReport,
    advance,
    at_record_boundary,
    check_prune_options,
    new_counts,
    prune_item,
    record_metrics,
    records_to_prune,
)
from src.tracking import start_tracking

log = logging.getLogger(__name__)


def describe(result: PruneResult, keep: float) -> str:
    """Before and after, with a one-line summary: tokens, objective drop, time."""
    r = result.record
    kept = r.n_reasoning_tokens - len(result.deleted(keep))
    objective = ""
    if r.step_objective:
        first, last = r.step_objective[0], r.step_objective[-1]
        objective = f" · J {first:.2f} → {last:.2f} nats ({last - first:+.2f})"
    return (
        f"\n── {r.id} · {r.method} · {r.n_reasoning_tokens} → {kept} units{objective} · {r.cost['wall_s']:.1f} s\n"
        f"before: {result.at(1.0)}\n"
        f"after:  {result.at(keep)}\n"
        f"marked: {result.show(keep)}"
    )


def prune_records(
    pruner,
    items: Iterable[Record | BadInput],
    cfg: DictConfig,
    writer: RecordWriter,
    partials: PartialStates,
    tracker,
) -> dict:
    """Prune and write every item not yet in `writer`, each from its partial state if saved; report bad input
    and failed records and go on (src/errors.py). Returns the counts."""
    counts = new_counts()
    skip = SkipReport(cfg.output_dir, counts, cfg.runtime.max_consecutive_failures)
    progress = cfg.runtime.progress
    todo = records_to_prune(items, writer.done, skip, counts, partials)
    for item in tqdm(todo, desc="records", unit="rec", total=cfg.data.limit, disable=not progress):

        def prune_and_write(item: Record = item) -> tuple[PruneResult, bool]:
            with tqdm(desc=item["id"], unit="del", leave=False, disable=not progress) as bar:
                result, continued = prune_item(pruner, item, cfg, partials, on_step=advance(bar))
            writer.write(result.record.to_json())
            return result, continued

        outcome = at_record_boundary(item, prune_and_write)
        if isinstance(outcome, BadInput):
            skip(outcome)
            continue
        result, continued = outcome
        skip.passed("pruning")
        partials.remove(item["id"])
        counts["pruned"] += 1
        counts["continued"] += continued
        tracker.log(record_metrics(result.record.to_json()))
        if cfg.show_chains:
            tqdm.write(describe(result, min(cfg.pruner.prune.keep_fractions)))
    skip.finish()
    return counts


def run(cfg: DictConfig) -> dict:
    check_prune_options(cfg)  # before anything is loaded or written
    setup_runtime(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    tracker = start_tracking(cfg, out, "prune")
    partials = PartialStates(out, cfg.runtime.checkpoint_every_s)
    on_ray = cfg.runtime.name == "ray"
    with RecordWriter(out / "records.jsonl") as writer:
        writer.done |= labelled_ids(cfg.runtime.get("done_from") or [])  # labelled elsewhere (packed labels)
        if on_ray:  # lazy: ray is an optional extra
            from src.scale.ray_prune import prune_records_on_ray

            counts = prune_records_on_ray(cfg, writer, partials, tracker, out)
        else:
            pruner = build_pruner(cfg)
            counts = prune_records(pruner, read_data(cfg, pruner), cfg, writer, partials, tracker)
    summary = {**counts, "records_file": str(out / "records.jsonl"), "wall_s": round(time.perf_counter() - began, 2)}
    if on_ray:
        summary["workers"] = int(cfg.runtime.workers)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    tracker.summary(summary)
    tracker.finish()
    where = f" on {cfg.runtime.workers} Ray workers" if on_ray else ""
    continued = f" ({counts['continued']} continued from a partial state)" if counts["continued"] else ""
    failed = f" ({counts['failed']} of them failed)" if counts["failed"] else ""
    done = f"{counts['already_done']} already done, {counts['skipped']} skipped{failed}"
    print(f"\n{counts['pruned']} pruned{where}{continued}, {done}.")
    print(f"Run directory: {out}  (records.jsonl, summary.json{', skipped.jsonl' if counts['skipped'] else ''})")
    if tracker.location:
        print(f"W&B offline run: {Path(tracker.location).parent}  (upload later with `wandb sync`)")
    return summary
