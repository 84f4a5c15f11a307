"""`make demo`: prune a few embedded problems exactly, then with the surrogate hybrid, and compare."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from exact.keep import kept_jaccard
from src import prune_job
from src.analysis.runs import read_run
from src.api import build_pruner, with_scorer
from src.models import load_model
from src.outputs import RecordWriter


def run(cfg: DictConfig) -> dict:
    summary = prune_job.run(cfg)
    if not cfg.demo.compare:
        return summary
    out = Path(cfg.output_dir)
    exact = read_run(str(out))[1] if summary["pruned"] + summary["already_done"] else []
    if not exact:
        print("\nSkipping the hybrid comparison: no record was pruned.")
        return summary
    model, tokenizer = load_model(**cfg.model)
    try:
        pruner = build_pruner(with_scorer(cfg, cfg.demo.hybrid), model, tokenizer)
    except (FileNotFoundError, ValueError) as err:  # no surrogate for this model, or one made for another
        print(f"\nSkipping the hybrid comparison: {err}")
        return summary
    keep = min(cfg.pruner.prune.keep_fractions)
    print(f"\nHybrid: {pruner.scorer.describe()}.")
    rows = []
    with RecordWriter(out / "hybrid.jsonl") as writer:
        for record in exact:
            result = pruner.prune(record["question"], record["reasoning"], record["answer"], [keep], id=record["id"])
            writer.write(result.record.to_json())
            overlap = kept_jaccard(record["n_reasoning_tokens"], result.deletion_order, record["deletion_order"], keep)
            rows.append((record["cost"]["wall_s"], result.record.cost["wall_s"], overlap))
            print(
                f"  {record['id']}: exact {rows[-1][0]:.1f} s, hybrid {rows[-1][1]:.1f} s "
                f"({rows[-1][0] / rows[-1][1]:.1f}× faster), kept-set Jaccard at keep {keep:g}: {overlap:.2f}"
            )
    exact_s, hybrid_s = sum(r[0] for r in rows), sum(r[1] for r in rows)
    comparison = {
        "exact_s": round(exact_s, 2),
        "hybrid_s": round(hybrid_s, 2),
        "speedup": round(exact_s / hybrid_s, 2),
        "mean_jaccard": round(sum(r[2] for r in rows) / len(rows), 3),
    }
    print(
        f"  total: exact {exact_s:.1f} s, hybrid {hybrid_s:.1f} s: {comparison['speedup']}× faster, "
        f"mean Jaccard {comparison['mean_jaccard']} (hybrid records in {out / 'hybrid.jsonl'})"
    )
    return {**summary, "hybrid": comparison}
