"""`+experiment=bench_exact`: naive against packed scoring on the same chains, one JSON object out.

Both scorers prune the same records to the same keep fraction (or make the same first `bench.steps`
deletions) with one loaded model, and the model's plain forward throughput (logits and log-softmax
included) is measured as the ceiling. Every token packed runs is scored, so its logits are the ceiling's;
naive runs the prompt in every candidate without logits, and so can run above it per token.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from exact import GreedyPruner
from src.api import build_pruner, select_chains, setup_runtime, with_scorer
from src.models import load_model


@torch.inference_mode()
def forward_throughput(model, seq_len: int, batch_sizes: list[int], repeats: int) -> dict:
    """Plain forward tokens/s (logits, log-softmax and gather included) at each batch size."""
    device, vocab = next(model.parameters()).device, model.config.vocab_size
    result = {}
    for batch in batch_sizes:
        ids = torch.randint(0, vocab, (batch, seq_len), device=device)
        model(input_ids=ids[:, :8])  # warm-up
        began = time.perf_counter()
        for _ in range(repeats):
            logits = model(input_ids=ids).logits
            torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).sum()
        result[str(batch)] = round(batch * seq_len * repeats / (time.perf_counter() - began), 1)
    return result


def candidate_gaps(naive: list, packed: list) -> dict:
    """|naive − packed| over every candidate score of every step, while both deleted the same tokens."""
    gaps = []
    for a, b in zip(naive, packed):
        for step_a, step_b, chose_a, chose_b in zip(a.step_scores, b.step_scores, a.deletion_order, b.deletion_order):
            gaps += [abs(x[1] - y[1]) for x, y in zip(step_a, step_b)]
            if chose_a != chose_b:
                break
    return {"candidates": len(gaps), "max": max(gaps), "mean": sum(gaps) / len(gaps)}


def float64_reference(model, pruner: GreedyPruner, scorers: DictConfig, chain: dict, fp32: dict[str, list]) -> dict:
    """First-step scores of `chain` by both scorers in float64, against the fp32 scores of the runs.

    Separates the algorithm (naive and packed agree in float64) from fp32 arithmetic.
    """
    model64 = copy.deepcopy(model).double()
    segments = pruner.encode(chain["question"], chain["reasoning"], chain["answer"])
    n = len(segments.reasoning)
    ids, candidates = segments.with_kept(torch.arange(n)), torch.arange(n)
    objective = pruner.scorer.objective_name
    scorers = {name: instantiate(spec)(model64, objective=objective) for name, spec in scorers.items()}
    exact = {name: scorer.score(ids, len(segments.prompt), n, candidates) for name, scorer in scorers.items()}
    truth = exact["naive"].values
    report = {"record": chain["id"], "naive64_vs_packed64": float((exact["packed"].values - truth).abs().max())}
    for name, step in fp32.items():
        report[f"{name}32_vs_float64"] = float(
            (torch.tensor([s for _, s in step], dtype=torch.float64) - truth).abs().max()
        )
    return report


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    bench = cfg.bench
    model, tokenizer = load_model(**cfg.model)
    pruners = {name: build_pruner(with_scorer(cfg, scorer), model, tokenizer) for name, scorer in bench.scorers.items()}
    chains = select_chains(next(iter(pruners.values())), cfg)

    runs = {}
    for name, pruner in pruners.items():
        results = []
        for chain in tqdm(chains, desc=f"{name} scorer", unit="rec"):
            results.append(
                pruner.prune(
                    chain["question"],
                    chain["reasoning"],
                    chain["answer"],
                    [bench.keep],
                    record_scores=True,
                    id=chain["id"],
                    max_deletions=bench.steps,
                ).record
            )
        wall = sum(r.cost["wall_s"] for r in results)
        tokens = sum(r.cost["tokens_processed"] for r in results)
        runs[name] = {
            "wall_s": round(wall, 2),
            "tokens_processed": tokens,
            "tokens_per_s": round(tokens / wall, 1),
            "forward_passes": sum(r.cost["forward_passes"] for r in results),
            "deletions": sum(len(r.deletion_order) for r in results),
            "records": results,
        }

    first = {name: r["records"][0].step_scores[0] for name, r in runs.items()}
    reference = (
        float64_reference(model, pruners["packed"], bench.scorers, chains[0], first) if bench.float64_check else None
    )
    ceiling = forward_throughput(
        model, bench.throughput.seq_len, list(bench.throughput.batch_sizes), bench.throughput.repeats
    )
    naive, packed = runs["naive"], runs["packed"]
    orders_equal = [a.deletion_order == b.deletion_order for a, b in zip(naive["records"], packed["records"])]
    gaps = candidate_gaps(naive["records"], packed["records"])
    report = {
        "model": cfg.model.path,
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "objective": cfg.pruner.objective,
        "keep": bench.keep,
        "records": [{"id": c["id"], "n_reasoning_tokens": c["n"]} for c in chains],
        "scorers": {
            name: {k: v for k, v in r.items() if k != "records"} | dict(bench.scorers[name]) for name, r in runs.items()
        },
        "naive_over_packed_wall": round(naive["wall_s"] / packed["wall_s"], 3),
        "naive_over_packed_tokens": round(naive["tokens_processed"] / packed["tokens_processed"], 3),
        "packed_over_naive_tokens_per_s": round(packed["tokens_per_s"] / naive["tokens_per_s"], 3),
        "identical_deletion_orders": all(orders_equal),
        "identical_per_record": orders_equal,
        "candidate_gap_nats": gaps,
        "first_step_max_gap_nats": reference,
        "forward_tokens_per_s": ceiling,
        "packed_fraction_of_ceiling": round(packed["tokens_per_s"] / max(ceiling.values()), 3),
        "naive_fraction_of_ceiling": round(naive["tokens_per_s"] / max(ceiling.values()), 3),
    }
    text = json.dumps(report, indent=2)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "bench_exact.json").write_text(text)
    print(text)
    return report
