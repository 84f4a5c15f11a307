"""`+experiment=bench_hybrid`: the hybrid's speed/agreement dial against exact greedy, side by side, one JSON object.

On the same held-out chains, with one loaded model:

- exact greedy (packed scorer), recording every step's candidate scores: the reference;
- every method of `bench.methods`: `scorer=hybrid` with some settings changed (the surrogate, fields of
  its policy), named by its policy (`HybridPolicy.label`: `eps=0.02`, `k=8`, ...);
- the static baselines of `bench.baselines`, for context: their J at each keep fraction.

Per method: wall time, tokens, speedups over exact (wall and tokens), candidates verified per step,
step agreement (along the exact path, the fraction of steps whose exact argmax is among what the
method would verify), kept-set Jaccard with exact at each keep fraction on the method's own path,
and the final J with its gap to exact and its J retention (the share of the J gap between Uniform
and exact it keeps). `bench.long` gives the same for whole long chains against their labelled exact
runs (exact greedy is not rerun; its cost is its labelling run's). The dial (tokens saved against
agreement) goes to dial.png, and the JSON and plot to W&B.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from exact import GreedyPruner
from src.analysis.dial import plot_dial
from src.api import build_pruner, select_chains, setup_runtime
from src.hybrid_compare import Methods, against_labels, baseline_objectives, compare, prune_all, retention
from src.models import load_model
from src.surrogate_data import labelled_records
from src.tracking import publish, start_tracking


def long_chains(cfg, methods: Methods, exact: GreedyPruner, model, tokenizer, fractions: list[float]) -> dict | None:
    """Every method on whole long chains against their labelled exact runs (`bench.long.labels`, their text read
    from `data`): `against_labels`."""
    spec = cfg.bench.long
    if not spec.labels:
        return None
    sources = cfg.copy()
    with open_dict(sources):
        sources.surrogate.label_sources = {cfg.data.name: cfg.data}
    rows = labelled_records(sources, list(spec.labels))[: spec.limit]
    names = list(methods.specs) if spec.methods is None else list(spec.methods)
    unknown = sorted(set(names) - set(methods.specs))
    if unknown:
        raise ValueError(
            f"bench.long.methods names {unknown}, which bench.methods does not give: {list(methods.specs)}"
        )
    return against_labels(cfg, methods, names, rows, exact, model, tokenizer, fractions, cfg.bench.baselines.uniform)


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    fractions = [float(f) for f in cfg.pruner.prune.keep_fractions]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tracker = start_tracking(cfg, out, "bench_hybrid")
    model, tokenizer = load_model(**cfg.model)
    exact = build_pruner(cfg, model, tokenizer)  # the job's scorer: packed
    methods = Methods(cfg, model, tokenizer)
    chains = select_chains(exact, cfg)

    reference = prune_all("exact_packed", exact, chains, fractions, record_scores=True)
    results = compare(methods, list(methods.specs), chains, reference, exact, fractions)

    report = {
        "model": cfg.model.path,
        "objective": cfg.pruner.objective,
        "threads": torch.get_num_threads(),
        "records": [{"id": c["id"], "n_reasoning_tokens": c["n"]} for c in chains],
        "settings": methods.specs,
        "methods": results,
        "baselines": baseline_objectives(
            cfg, cfg.bench.baselines, model, tokenizer, exact, chains, reference, fractions
        ),
        "long": long_chains(cfg, methods, exact, model, tokenizer, fractions),
    }
    retention(results, report["baselines"], min(fractions))
    target = OmegaConf.to_container(cfg.bench.target) if cfg.bench.get("target") else None
    dial = plot_dial(results, min(fractions), out / "dial.png", target)
    publish(out, tracker, "bench_hybrid", report, {"bench_hybrid/dial": dial})
    tracker.finish()
    print(json.dumps(report, indent=2))
    return report
