"""`+experiment=bench_hybrid`: exact-packed greedy against the surrogate hybrid at several k, on the same chains.

For each method: wall time, tokens processed, speedups over exact, mean Jaccard of the kept sets at
each keep fraction, and the gap in the final objective. Exact runs with sdpa attention, the hybrid
with eager attention (its features are attention weights), on one loaded model.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from exact import GreedyPruner
from exact.keep import kept_indices
from exact.scorers import PackedScorer
from src.api import build_pruner, load_eager_model, scorer_options, setup_runtime
from src.tasks.bench_exact import select_chains
from surrogate.hybrid import HybridScorer
from surrogate.store import load_surrogate


def kept_jaccard(n: int, order: list[int], reference: list[int], keep: float) -> float:
    """Jaccard overlap of the tokens two deletion orders keep at `keep`."""
    a, b = set(kept_indices(n, order, keep)), set(kept_indices(n, reference, keep))
    return len(a & b) / len(a | b) if a | b else 1.0


def run_method(name: str, pruner: GreedyPruner, chains: list[dict], fractions: list[float], attn: str) -> list:
    """Prune every chain with `pruner`, its model switched to `attn` attention; the records."""
    pruner.scorer.model.set_attn_implementation(attn)
    return [
        pruner.prune(c["question"], c["reasoning"], c["answer"], fractions, id=c["id"]).record
        for c in tqdm(chains, desc=name, unit="rec")
    ]


def summarise(records: list, reference: list, fractions: list[float]) -> dict:
    wall = sum(r.cost["wall_s"] for r in records)
    tokens = sum(r.cost["tokens_processed"] for r in records)
    ref_wall = sum(r.cost["wall_s"] for r in reference)
    ref_tokens = sum(r.cost["tokens_processed"] for r in reference)
    return {
        "wall_s": round(wall, 2),
        "tokens_processed": tokens,
        "speedup_wall": round(ref_wall / wall, 3),
        "speedup_tokens": round(ref_tokens / tokens, 3),
        "jaccard": {
            f"{f:g}": round(
                statistics.mean(
                    kept_jaccard(r.n_reasoning_tokens, r.deletion_order, e.deletion_order, f)
                    for r, e in zip(records, reference)
                ),
                4,
            )
            for f in fractions
        },
        "final_objective_gap_nats": round(
            statistics.mean(r.step_objective[-1] - e.step_objective[-1] for r, e in zip(records, reference)), 4
        ),
    }


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    bench, fractions = cfg.bench, [float(f) for f in cfg.pruner.keep_fractions]
    model, tokenizer = load_eager_model(cfg)
    surrogate, meta = load_surrogate(cfg.pruner.surrogate, cfg.model.path)
    options = scorer_options(cfg)
    exact = build_pruner(cfg, model, tokenizer, PackedScorer(model, cfg.pruner.objective, **options))
    chains = select_chains(exact, cfg)

    def hybrid(k: int) -> GreedyPruner:
        return build_pruner(cfg, model, tokenizer, HybridScorer(model, surrogate, cfg.pruner.objective, k=k, **options))

    reference = run_method("exact_packed", exact, chains, fractions, "sdpa")
    methods = {f"hybrid_k{k}": hybrid(k) for k in bench.ks}
    if bench.surrogate_only:
        methods["surrogate_only"] = hybrid(1)
    results = {"exact_packed": summarise(reference, reference, fractions)}
    for name, pruner in methods.items():
        results[name] = summarise(run_method(name, pruner, chains, fractions, "eager"), reference, fractions)

    report = {
        "model": cfg.model.path,
        "surrogate": {"kind": meta.get("kind"), "val_pearson": meta.get("val", {}).get("pearson")},
        "objective": cfg.pruner.objective,
        "threads": torch.get_num_threads(),
        "records": [{"id": c["id"], "n_reasoning_tokens": c["n"]} for c in chains],
        "methods": results,
    }
    text = json.dumps(report, indent=2)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "bench_hybrid.json").write_text(text)
    print(text)
    return report
