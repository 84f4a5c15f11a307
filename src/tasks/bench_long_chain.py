"""`+experiment=bench_memory`: the peak memory of pruning one long chain, in a process of its own.

The reasoning of `data`'s records, in file order, is joined into one chain of at least
`bench.reasoning_tokens` tokens (with the first record's question and answer), and the job's pruner
(scorer=hybrid by default) makes `bench.steps` greedy deletions from it. One JSON object: the chain's
length, seconds and tokens a step, and the process's peak resident memory (`ru_maxrss`) after the
model is loaded and at the end, against `bench.target_gb`.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from src.api import build_pruner, read_data, reasoning_length, setup_runtime
from src.data import BadInput
from src.models import load_model
from src.tracking import publish, start_tracking


def peak_rss_gb() -> float:
    """The process's peak resident memory so far, in GB (Linux reports ru_maxrss in KiB); on a GPU, host memory only."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def long_chain(cfg: DictConfig, pruner, tokens: int) -> dict:
    """One record whose reasoning joins the reasoning of `cfg.data`'s records, one a line, until it has at
    least `tokens` tokens; the first record's question and answer."""
    parts, first = [], None
    for record in read_data(cfg, pruner):
        if isinstance(record, BadInput):
            continue
        first = first or record
        parts.append(record["reasoning"])
        joined = {**first, "id": f"{first['id']}+{len(parts) - 1}", "reasoning": "\n".join(parts)}
        if reasoning_length(pruner, joined) >= tokens:
            return joined
    raise ValueError(f"the records of {cfg.data.path} hold fewer than {tokens} reasoning tokens in all")


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    spec = cfg.bench
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tracker = start_tracking(cfg, out, "bench_memory")
    model, tokenizer = load_model(**cfg.model)
    pruner = build_pruner(cfg, model, tokenizer)
    loaded = peak_rss_gb()
    chain = long_chain(cfg, pruner, spec.reasoning_tokens)
    began = time.perf_counter()
    result = pruner.prune(
        chain["question"], chain["reasoning"], chain["answer"], [spec.keep], id=chain["id"], max_deletions=spec.steps
    )
    seconds = time.perf_counter() - began
    record, peak = result.record, peak_rss_gb()
    steps = len(record.deletion_order)
    report = {
        "model": cfg.model.path,
        "scorer": record.cost.get("scorer"),
        "threads": torch.get_num_threads(),
        "n_reasoning_tokens": record.n_reasoning_tokens,
        "steps": steps,
        "seconds_per_step": round(seconds / steps, 2),
        "tokens_per_step": round(record.cost["tokens_processed"] / steps, 1),
        "peak_rss_gb_model_loaded": round(loaded, 3),
        "peak_rss_gb": round(peak, 3),
        "target_gb": spec.target_gb,
        "within_target": peak <= spec.target_gb,
    }
    publish(out, tracker, "bench_memory", report, {})
    tracker.finish()
    print(json.dumps(report, indent=2))
    return report
