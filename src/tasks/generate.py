"""`+experiment=generate`: teacher chains by rejection sampling, and the teacher's zero-shot accuracy
(src/teacher.py), in one run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.api import setup_runtime
from src.teacher import generate_chains
from src.tracking import start_tracking


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    out = Path(cfg.output_dir)
    tracker = start_tracking(cfg, out, "generate")
    summary = generate_chains(cfg, out, tracker)
    tracker.finish()
    zs = summary.get("zero_shot")
    print(f"\nteacher chains: {summary['kept']} kept, {summary['dropped']} dropped of {summary['problems']} problems")
    if zs:
        print(f"zero-shot test accuracy: {zs['accuracy']:.3f} on {zs['n']} problems")
    print(f"records: {out / 'records.jsonl'}  (prune them with +experiment=prune data=jsonl data.path=...)")
    return summary
