"""`+experiment=merge`: combine the shards of a sharded prune run into one records.jsonl, checked.

    python -m src.run +experiment=merge merge.inputs=outputs/prune/2026-…          # a sweep dir: its shard_*
    python -m src.run +experiment=merge 'merge.inputs=[runs/shard_0,runs/shard_1]'  # or run dirs, or globs

Nothing may be lost or doubled: a record id in two shards, a corrupt line (named by file:line) or a
shard that did not finish (no summary.json) is an error, and the merged file is not written. With
`merge.expected=auto` (default) and shards that saved their Hydra config, the shards must be all of
0 … n−1 with the same data config, and every record id that config selects must appear exactly once,
or be reported skipped by its shard. `merge.expected=data` takes the selection from this job's own
`data` config instead (for runs without a saved config); `none` checks duplicates, corrupt lines and
unfinished runs only (to join unrelated runs).

The run directory gets records.jsonl (shard by shard, in file order), skipped.jsonl (all shards'),
and summary.json: records and skipped per shard and in total.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.data import BadInput, read_jsonl
from src.outputs import json_line, write_jsonl
from src.scale.shards import shard_of

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20


class MergeError(ValueError):
    """The shards cannot be merged: ids missing or duplicated, corrupt lines, unfinished or mismatched shards."""

    def __init__(self, problems: list[str]):
        shown = problems[:MAX_PROBLEMS]
        more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__("cannot merge the shards:\n  " + "\n  ".join(shown) + more)
        self.problems = problems


@dataclass
class Shard:
    """One prune run directory, with the shard settings of its saved Hydra config (when it has one)."""

    dir: Path
    config: DictConfig | None = None
    records: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def index(self) -> int | None:
        return None if self.config is None else int(self.config.runtime.get("shard") or 0)

    @property
    def num_shards(self) -> int | None:
        return None if self.config is None else int(self.config.runtime.get("num_shards") or 1)

    def describe(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "shard": self.index, "records": self.records, "skipped": len(self.skipped)}


def run_dirs(inputs: str | list[str]) -> list[Path]:
    """The run directories `inputs` names: paths or globs; a folder without records.jsonl means its subfolders'."""
    patterns = [inputs] if isinstance(inputs, str) else list(inputs)
    if not patterns:
        raise MergeError(["merge.inputs is empty: give the shards' run directories, a glob, or their sweep dir"])
    dirs: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
        if not matches or not Path(matches[0]).exists():
            raise MergeError([f"no run directory matches {pattern}"])
        for match in map(Path, matches):
            if match.is_dir() and not (match / "records.jsonl").exists():
                dirs += sorted(p.parent for p in match.glob("*/records.jsonl"))
            else:
                dirs.append(match)
    return list(dict.fromkeys(dirs))


def load_shard(folder: Path) -> Shard:
    """The shard in `folder`, with its saved config (records and skipped entries are read later)."""
    saved = folder / ".hydra" / "config.yaml"
    return Shard(folder, OmegaConf.load(saved) if saved.exists() else None)


def read_skipped(shard: Shard) -> list[str]:
    """Load the shard's skipped.jsonl entries; problems: its corrupt lines (file:line)."""
    path = shard.dir / "skipped.jsonl"
    if not path.exists():
        return []
    problems = []
    for _, entry in read_jsonl(path):
        if isinstance(entry, BadInput):
            problems.append(f"{entry.where}: corrupt line ({entry.reason})")
        else:
            shard.skipped.append(entry)
    return problems


def unfinished(shards: list[Shard]) -> list[str]:
    """Shards without records.jsonl, or without summary.json (killed or still running)."""
    problems = [f"{s.dir} has no records.jsonl" for s in shards if not (s.dir / "records.jsonl").exists()]
    return problems + [
        f"{s.dir} has no summary.json: the shard did not finish (rerun it in that directory: it resumes)"
        for s in shards
        if not (s.dir / "summary.json").exists()
    ]


def shard_set_problems(shards: list[Shard]) -> list[str]:
    """Unless the shards are one each of 0 … n−1 of one run (same num_shards and data config): what is wrong.

    Shards without a saved config cannot be checked and pass.
    """
    if not shards or any(s.config is None for s in shards):
        return []
    counts = {s.num_shards for s in shards}
    if len(counts) > 1:
        return [f"the shards disagree on runtime.num_shards: {sorted(counts)}"]
    problems = []
    data = [OmegaConf.to_container(s.config.data) for s in shards]
    if any(d != data[0] for d in data):
        problems.append(f"the shards were run with different data configs (see {shards[0].dir}/.hydra/config.yaml)")
    by_index: dict[int, Path] = {}
    for shard in shards:
        if shard.index in by_index:
            problems.append(f"shard {shard.index} given twice: {by_index[shard.index]} and {shard.dir}")
        by_index.setdefault(shard.index, shard.dir)
    n = counts.pop()
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        problems.append(f"shards {missing} of {n} are not among the inputs")
    return problems


def copy_records(shard: Shard, out, seen: dict[str, str]) -> list[str]:
    """Append the shard's records.jsonl to `out`; problems: corrupt lines (file:line) and ids seen before."""
    problems = []
    path = shard.dir / "records.jsonl"
    for lineno, record in read_jsonl(path):
        where = f"{path}:{lineno}"
        if isinstance(record, BadInput) or "id" not in record:
            problems.append(f"{where}: corrupt line ({record.reason if isinstance(record, BadInput) else 'no id'})")
            continue
        rid = str(record["id"])
        if rid in seen:
            problems.append(f"duplicate id {rid!r}: in {seen[rid]} and {where}")
            continue
        seen[rid] = where
        out.write(json_line(record))
        shard.records += 1
    return problems


def expected_ids(cfg: DictConfig, shards: list[Shard]) -> set[str] | None:
    """The ids the run had to cover (`merge.expected`: auto, data or none); None when it cannot be known."""
    mode = cfg.merge.expected
    if mode == "none":
        return None
    if mode == "auto":
        if not shards or any(s.config is None for s in shards):
            log.warning(
                "some inputs have no .hydra/config.yaml: checking duplicates only (merge.expected=data checks more)"
            )
            return None
        source = shards[0].config
    elif mode == "data":
        source = cfg
    else:
        raise ValueError(f"unknown merge.expected {mode!r}; expected auto, data or none")
    from src.scale.inputs import selected_items

    whole = OmegaConf.merge(source, {"runtime": {"shard": 0, "num_shards": 1}})
    return {item["id"] for item in selected_items(whole) if not isinstance(item, BadInput)}


def coverage_problems(expected: set[str], seen: dict[str, str], shards: list[Shard]) -> list[str]:
    """Ids expected but neither merged nor reported skipped, and merged ids outside the selection."""
    reported = {str(e["id"]) for shard in shards for e in shard.skipped if e.get("id") is not None}
    missing = sorted(expected - set(seen) - reported)
    problems = []
    if missing:
        n = shards[0].num_shards if shards and shards[0].num_shards else None
        where = f" (their shards: {sorted({shard_of(rid, n) for rid in missing})})" if n else ""
        problems.append(f"{len(missing)} selected record ids are missing{where}: {', '.join(map(repr, missing[:10]))}")
    problems += [f"record {rid!r} ({seen[rid]}) is not in the selected input" for rid in sorted(set(seen) - expected)]
    return problems


def merge_shards(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Check and merge the shards `cfg.merge.inputs` names into `out`; raises MergeError on any problem."""
    shards = sorted(map(load_shard, run_dirs(cfg.merge.inputs)), key=lambda s: (s.index is None, s.index or 0))
    if any(s.dir.resolve() == out.resolve() for s in shards):
        raise MergeError([f"the merge's own run directory {out} is among its inputs"])
    problems = unfinished(shards) + (shard_set_problems(shards) if cfg.merge.expected == "auto" else [])
    if problems:
        raise MergeError(problems)
    merged, staging = out / "records.jsonl", out / "records.jsonl.tmp"
    seen: dict[str, str] = {}
    with staging.open("wb") as handle:
        for shard in shards:
            problems += copy_records(shard, handle, seen) + read_skipped(shard)
        handle.flush()
        os.fsync(handle.fileno())
    expected = expected_ids(cfg, shards) if not problems else None
    if expected is not None:
        problems += coverage_problems(expected, seen, shards)
    if problems:
        staging.unlink()
        raise MergeError(problems)
    os.replace(staging, merged)
    skipped = [entry for shard in shards for entry in shard.skipped]
    write_jsonl(out / "skipped.jsonl", skipped)
    return {
        "records": len(seen),
        "skipped": len(skipped),
        "expected": None if expected is None else len(expected),
        "records_file": str(merged),
        "shards": [shard.describe() for shard in shards],
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = merge_shards(cfg, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for shard in summary["shards"]:
        print(f"shard {shard['shard']}: {shard['records']} records, {shard['skipped']} skipped  ({shard['dir']})")
    checked = f", all {summary['expected']} selected ids accounted for" if summary["expected"] is not None else ""
    print(f"\n{summary['records']} records merged from {len(summary['shards'])} shards{checked}.")
    print(f"Run directory: {out}  (records.jsonl, skipped.jsonl, summary.json)")
    return summary
