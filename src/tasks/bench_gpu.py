"""`+experiment=bench_gpu`: the exact scorers on Llama-shaped models, one JSON object out.

The check for an accelerator (docs/BENCHMARKS.md, "On an accelerator"). Its models are randomly
initialised from the shapes below, so it needs no model hub: speed does not depend on the weights,
and naive against packed agreement is still a real test. On synthetic chains (random token ids) it
measures

- exactness: per-candidate |naive − packed| of one full step, fp32 on the ~1B shape and bf16 on the
  8B shape, and the deletion orders of a few greedy steps in both dtypes;
- speed: one full step of every candidate, naive and packed (wall time, tokens, tokens/s), against the
  plain forward throughput of the same run; the hybrid's base pass with attention recording against
  a plain base pass; and the real hybrid (`HybridScorer`, scorer=hybrid's default policy) for a few
  greedy steps. Random weights have no trained surrogate, so its lookahead prior f_h ranks alone,
  uncalibrated: the default policy then runs its fixed k_min, and the JSON says so;
- memory: the peak CUDA memory of each pass, and a real out-of-memory back-off under a memory cap;
- a projection of the GPU-hours to prune the paper's GSM8K set, from the measured rates and the cost
  model (docs/DESIGN.md §7).

Parts run cheapest first; a part whose estimate does not fit what is left of `bench.time_budget_s` is
skipped, and the JSON says so. This module imports only torch, transformers, omegaconf, the scorers and the
cost model (src/cost_model.py).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, LlamaConfig

from exact.greedy import greedy_prune
from exact.scorers import NaiveScorer, PackedScorer, target_logprobs
from exact.sequence import Segments
from src.cost_model import chain_tokens, step_tokens
from surrogate.features import recording_received_attention
from surrogate.hybrid import HybridScorer
from surrogate.models import Surrogate
from surrogate.policy import HybridPolicy

_LLAMA3 = dict(num_key_value_heads=8, vocab_size=128256, rope_parameters={"rope_type": "default", "rope_theta": 5e5})
_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
# Per `bench.shapes`: the device, and (name, LlamaConfig fields) of the fp32 and the bf16 model. Llama-3's rope
# scaling is left out: it changes no cost.
SHAPES = {
    "gpu": {
        "device": "cuda",
        "fp32": (
            "llama-3.2-1b",
            dict(
                _LLAMA3,
                num_hidden_layers=16,
                hidden_size=2048,
                intermediate_size=8192,
                num_attention_heads=32,
                tie_word_embeddings=True,
            ),
        ),
        "bf16": (
            "llama-3.1-8b",
            dict(_LLAMA3, num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32),
        ),
    },
    "tiny": {
        "device": "cpu",
        "fp32": ("tiny-llama", dict(_TINY, vocab_size=256)),
        "bf16": ("tiny-llama", dict(_TINY, vocab_size=256)),
    },
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAFETY = 2.0  # a part's time estimate: its cost-model tokens at the measured forward rate, times this


class Clock:
    """The time budget: what is left of it, and the parts skipped for want of it."""

    def __init__(self, budget_s: float):
        self.budget_s, self.began, self.skipped = budget_s, time.perf_counter(), []

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def skip_reason(self, part: str, estimate_s: float) -> str | None:
        """None when `part` fits in the time left; otherwise why it is skipped (also kept in `skipped`)."""
        left = self.budget_s - self.elapsed()
        if estimate_s <= left:
            return None
        reason = (
            f"estimated {estimate_s:.0f} s ({SAFETY}× its tokens at the measured forward rate), "
            f"{max(left, 0):.0f} s of the {self.budget_s:.0f} s budget left"
        )
        self.skipped.append({"part": part, "reason": reason})
        return reason


class _Messages(logging.Handler):
    """Collects the messages logged while it is attached."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def measured(run: Callable[[], Any], device: torch.device) -> tuple[Any, dict]:
    """`run()`, its wall time and, on CUDA, the peak memory it allocated (GiB; the peak counter reset before)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    result = run()
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - began
    return result, {
        "wall_s": wall,
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if cuda else None,
    }


def pass_report(tokens: float, passes: int | None, *timings: dict, ceiling: float | None = None) -> dict:
    """Wall time (summed over `timings`), tokens, tokens/s, passes and peak memory; with `ceiling`, the
    fraction of the plain forward throughput."""
    wall = sum(t["wall_s"] for t in timings)
    peaks = [t["peak_gib"] for t in timings if t["peak_gib"] is not None]
    report = {
        "wall_s": round(wall, 4),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "passes": passes,
        "peak_gib": max(peaks) if peaks else None,
    }
    if ceiling:
        report["fraction_of_forward"] = round(tokens / wall / ceiling, 3)
    return report


def build_model(config: dict, dtype: torch.dtype, device: torch.device, positions: int, seed: int):
    """A randomly initialised Llama of this shape, created on `device` in `dtype` (no fp32 copy on the CPU)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(max_position_embeddings=positions, **config), dtype=dtype, attn_implementation="sdpa"
        )
    return model.eval()


def synthetic_chain(vocab: int, prompt: int, n: int, answer: int, generator: torch.Generator) -> Segments:
    """Random token ids as a prompt ‖ n reasoning tokens ‖ answer chain."""
    ids = torch.randint(vocab, (prompt + n + answer,), generator=generator)
    return Segments(prompt=ids[:prompt], reasoning=ids[prompt : prompt + n], answer=ids[prompt + n :])


@torch.inference_mode()
def forward_throughput(model, seq_len: int, batch_sizes: list[int], repeats: int, generator) -> dict[str, float]:
    """Plain forward tokens/s at each batch size, every position's log-prob included as the scorers read them."""
    device, vocab = model.device, model.config.vocab_size
    result = {}
    for batch in batch_sizes:
        ids = torch.randint(vocab, (batch, seq_len), generator=generator).to(device)

        def once():
            return target_logprobs(model(input_ids=ids).logits, ids.roll(-1, dims=1)).sum()

        once()  # warm-up
        _, timing = measured(lambda: [once() for _ in range(repeats)], device)
        result[str(batch)] = round(batch * seq_len * repeats / timing["wall_s"], 1)
    return result


def agreement(naive: torch.Tensor, packed: torch.Tensor) -> dict:
    """|naive − packed| over the candidates of one step, whether both pick the same one, and naive's margin
    between its best two (near-ties are what a looser dtype can reorder)."""
    gaps = (naive - packed).abs()
    top = naive.topk(min(2, len(naive))).values
    return {
        "candidates": len(naive),
        "max_abs_gap": float(gaps.max()),
        "mean_abs_gap": float(gaps.mean()),
        "same_argmax": int(naive.argmax()) == int(packed.argmax()),
        "top2_margin": float(top[0] - top[-1]),
    }


def full_step(model, segments: Segments, scorers: dict, objective: str, ceiling: float) -> dict:
    """One step of every candidate, naive and packed, and the hybrid's recorded base pass over the same chain.

    The packed step is timed with the prompt's KV already cached, as in every step after a record's first.
    """
    device = model.device
    prompt, n = len(segments.prompt), len(segments.reasoning)
    ids, candidates = segments.with_kept(torch.arange(n)), torch.arange(n)
    naive = NaiveScorer(model, objective, **scorers["naive"])
    packed = PackedScorer(model, objective, **scorers["packed"])

    naive_scores, t_naive = measured(lambda: naive.score(ids, prompt, n, candidates), device)
    first, t_first = measured(lambda: packed.base_pass(ids, prompt, n), device)  # runs and caches the prompt
    first_report = pass_report(first.tokens, first.passes, t_first)
    del first
    base, t_base = measured(lambda: packed.base_pass(ids, prompt, n), device)
    suffixes, t_suffixes = measured(partial(packed.score_from, base, candidates), device)
    packed_tokens = base.tokens + suffixes.tokens
    report = {
        "naive": pass_report(naive_scores.tokens, naive_scores.passes, t_naive, ceiling=ceiling),
        "packed": pass_report(packed_tokens, base.passes + suffixes.passes, t_base, t_suffixes, ceiling=ceiling)
        | {
            "prompt_and_base_pass": first_report,
            "base_pass": pass_report(base.tokens, base.passes, t_base),
            "suffix_passes": pass_report(suffixes.tokens, suffixes.passes, t_suffixes),
        },
    }
    report["packed_over_naive_wall"] = round(report["packed"]["wall_s"] / report["naive"]["wall_s"], 4)
    report["naive_over_packed_tokens"] = round(naive_scores.tokens / packed_tokens, 3)
    report["agreement"] = agreement(naive_scores.values, suffixes.values)
    del base, suffixes

    with recording_received_attention(model, len(segments.answer)):
        recorded, t_recorded = measured(lambda: packed.base_pass(ids, prompt, n, splittable=False), device)
    plain = report["packed"]["base_pass"]
    recorded_report = pass_report(recorded.tokens, recorded.passes, t_recorded)
    report["hybrid_base_pass"] = {
        "plain": plain,
        "recorded": recorded_report,
        "recorded_over_plain_wall": round(recorded_report["wall_s"] / plain["wall_s"], 3),
    }
    return report


def hybrid_steps(model, segments: Segments, scorers: dict, objective: str, spec: dict, ceiling: float) -> dict:
    """The real hybrid for `spec.steps` greedy steps: `HybridScorer` with scorer=hybrid's default policy, its
    prior f_h ranking alone (no trained surrogate fits random weights, so it runs uncalibrated: a fixed k_min)."""
    verify = partial(PackedScorer, **scorers["packed"])
    surrogate = Surrogate(0, "first_order", horizon=spec["horizon"])
    scorer = HybridScorer(model, surrogate, objective, policy=HybridPolicy(), verify=verify)
    trace, timing = measured(lambda: greedy_prune(scorer, segments, spec["steps"]), model.device)
    return {
        "surrogate": f"first_order@{spec['horizon']}: the lookahead prior alone, uncalibrated on random weights, "
        f"so the default policy verifies a fixed k_min = {scorer.policy.k_min} a step (plus the refreshed neighbours)",
        "policy": scorer.policy.to_dict(),
        "steps": spec["steps"],
        "verified_per_step": trace.verified_per_step,
        "chain": pass_report(trace.tokens_processed, trace.forward_passes, timing, ceiling=ceiling),
        "wall_per_step_s": round(timing["wall_s"] / spec["steps"], 4),
    }


def greedy_orders(model, segments: Segments, scorers: dict, objective: str, steps: int) -> dict:
    """Deletion orders of `steps` greedy steps with both scorers, and the largest step score gap while they agree."""
    traces = {
        "naive": greedy_prune(NaiveScorer(model, objective, **scorers["naive"]), segments, steps, record_scores=True),
        "packed": greedy_prune(
            PackedScorer(model, objective, **scorers["packed"]), segments, steps, record_scores=True
        ),
    }
    naive, packed = traces["naive"], traces["packed"]
    gaps, margins = [], []
    for step_n, step_p, chose_n, chose_p in zip(
        naive.step_scores, packed.step_scores, naive.deletion_order, packed.deletion_order
    ):
        gaps += [abs(a[1] - b[1]) for a, b in zip(step_n, step_p)]
        best = sorted((s for _, s in step_n), reverse=True)
        margins.append(best[0] - best[1] if len(best) > 1 else None)
        if chose_n != chose_p:
            break
    return {
        "n": len(segments.reasoning),
        "steps": steps,
        "equal": naive.deletion_order == packed.deletion_order,
        "deletion_order": {name: trace.deletion_order for name, trace in traces.items()},
        "max_step_score_gap": max(gaps),
        "naive_top2_margins": margins,
        "wall_s": {name: round(trace.wall_s, 3) for name, trace in traces.items()},
    }


def oom_backoff(model, segments: Segments, packed_budgets: dict, objective: str, cap: float) -> dict:
    """A real CUDA out-of-memory back-off: the same packed step, first free, then under a process memory cap
    that the default budget does not fit (`cap` of its measured step memory above what was allocated
    before). Reports the back-off, its log lines and the scores against the uncapped ones."""
    device = model.device
    if device.type != "cuda":
        return {"skipped": "needs a CUDA device: torch.cuda.set_per_process_memory_fraction caps CUDA memory only"}
    prompt, n = len(segments.prompt), len(segments.reasoning)
    ids, candidates = segments.with_kept(torch.arange(n)), torch.arange(n)
    gc.collect()
    torch.cuda.empty_cache()
    floor = torch.cuda.memory_allocated(device)
    free, t_free = measured(
        lambda: PackedScorer(model, objective, **packed_budgets).score(ids, prompt, n, candidates), device
    )
    peak = torch.cuda.max_memory_allocated(device)
    gc.collect()
    torch.cuda.empty_cache()
    limit = floor + cap * (peak - floor)
    total = torch.cuda.get_device_properties(device).total_memory
    scorer = PackedScorer(model, objective, **packed_budgets)
    handler, logger = _Messages(), logging.getLogger("exact.scorers")
    logger.addHandler(handler)
    torch.cuda.set_per_process_memory_fraction(limit / total, device)
    report = {
        "n": n,
        "default_budget": dict(packed_budgets),
        "allocated_before_gib": round(floor / 2**30, 3),
        "free_step_peak_gib": round(peak / 2**30, 3),
        "cap_gib": round(limit / 2**30, 3),
        "cap_fraction_of_device": round(limit / total, 4),
        "free_wall_s": round(t_free["wall_s"], 3),
    }
    try:
        capped, t_capped = measured(lambda: scorer.score(ids, prompt, n, candidates), device)
    except torch.OutOfMemoryError as err:
        return report | {"error": str(err), "log": handler.messages}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        logger.removeHandler(handler)
    after = scorer.budget
    return report | {
        "backoffs": after.backoffs,
        "budget_after": {
            "token_budget": after.token_budget,
            "row_tokens": after.row_tokens,
            "split_base": after.split_base,
        },
        "halved": after.backoffs > 0 and after.token_budget <= packed_budgets["token_budget"] // 2,
        "log": handler.messages,
        "capped_wall_s": round(t_capped["wall_s"], 3),
        "capped_peak_gib": t_capped["peak_gib"],
        "max_abs_gap_vs_free": float((capped.values - free.values).abs().max()),
        "bitwise_equal": torch.equal(capped.values, free.values),
        "same_argmax": int(capped.values.argmax()) == int(free.values.argmax()),
    }


def bench_model(role: str, bench: DictConfig, device: torch.device, clock: Clock) -> dict:
    """Every part for one model (`fp32` or `bf16`), cheapest first, within the time left."""
    name, shape = SHAPES[bench.shapes][role]
    lengths = sorted(bench.fp32_lengths if role == "fp32" else bench.lengths)
    prompt, answer, objective = bench.prompt_tokens, bench.answer_tokens, bench.objective
    scorers = OmegaConf.to_container(bench.scorers, resolve=True)
    hybrid = OmegaConf.to_container(bench.hybrid, resolve=True)
    oom_length = bench.oom.length if role == "bf16" else None
    positions = max([bench.throughput.seq_len, prompt + answer + max(lengths + [oom_length or 0])]) + 16
    model, t_build = measured(lambda: build_model(shape, DTYPES[role], device, positions, bench.seed), device)
    weights = round(torch.cuda.memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None
    generator = torch.Generator().manual_seed(bench.seed)
    chains = {
        n: synthetic_chain(shape["vocab_size"], prompt, n, answer, generator)
        for n in sorted({*lengths, oom_length or lengths[0]})
    }
    forward = forward_throughput(
        model, bench.throughput.seq_len, list(bench.throughput.batch_sizes), bench.throughput.repeats, generator
    )
    ceiling = max(forward.values())

    def tokens(method: str, n: int) -> float:
        return step_tokens(method, n, prompt, answer, hybrid["horizon"], hybrid["k_estimate"])

    parts = [
        (
            f"step_n{n}",
            3 * tokens("packed", n) + tokens("naive", n),
            lambda n=n: full_step(model, chains[n], scorers, objective, ceiling),
        )
        for n in lengths
    ]
    parts += [
        (
            f"hybrid_n{n}",
            hybrid["steps"] * tokens("hybrid", n),
            lambda n=n: hybrid_steps(model, chains[n], scorers, objective, hybrid, ceiling),
        )
        for n in lengths
    ]
    parts.append(
        (
            "greedy_orders",
            bench.steps * (tokens("naive", lengths[0]) + tokens("packed", lengths[0])),
            lambda: greedy_orders(model, chains[lengths[0]], scorers, objective, bench.steps),
        )
    )
    if oom_length is not None:
        parts.append(
            (
                "oom_backoff",
                2 * tokens("packed", oom_length),
                lambda: oom_backoff(model, chains[oom_length], scorers["packed"], objective, bench.oom.cap),
            )
        )
    results = {}
    for part, part_tokens, run in sorted(parts, key=lambda item: item[1]):
        reason = clock.skip_reason(f"{role}.{part}", SAFETY * part_tokens / ceiling)
        results[part] = {"skipped": reason} if reason else run()
    report = {
        "shape": name,
        "config": shape,
        "dtype": str(model.dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": round(t_build["wall_s"], 2),
        "weights_gib": weights,
        "forward_tokens_per_s": forward | {"seq_len": bench.throughput.seq_len},
        **{part: results[part] for part, _, _ in parts},
    }
    return report


def reasoning_length(projection: DictConfig) -> tuple[float, str]:
    """Mean reasoning tokens of the GSM8K chains the projection prices, and where the number comes from:
    counted in `projection.data` with `projection.tokenizer` when both are there, else the configured mean."""
    absent = [
        f"{what} {path}"
        for what, path in (("data", projection.data), ("tokenizer", projection.tokenizer))
        if not path or not Path(path).exists()
    ]
    if absent:
        why = ", no ".join(absent)
        return float(projection.mean_reasoning_tokens), f"{projection.mean_source} (configured: no {why})"
    from transformers import AutoTokenizer

    from src.data import gsm8k_record, read_jsonl

    rows = (
        gsm8k_record(row, str(line), "{answer}", f"{projection.data}:{line}")
        for line, row in read_jsonl(projection.data)
        if isinstance(row, dict)
    )
    texts = [row["reasoning"] for row in rows if isinstance(row, dict)]
    tokenizer = AutoTokenizer.from_pretrained(projection.tokenizer)
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    if not counts:
        raise ValueError(f"{projection.data} has no GSM8K rows to measure the reasoning length on")
    return sum(counts) / len(counts), (
        f"{projection.data}: {len(counts)} worked solutions without calculator notes, counted with the tokenizer "
        f"in {projection.tokenizer}"
    )


def projection(bf16: dict, bench: DictConfig, device_name: str) -> dict:
    """GPU-hours to prune the paper's GSM8K set with naive, packed and the hybrid: the cost model's tokens a chain
    (docs/DESIGN.md §7) at each method's effective rate, measured on the bf16 model at the length nearest the mean."""
    config = bench.projection
    mean, source = reasoning_length(config)
    n0 = max(2, round(mean))
    measured_ns = [
        int(part.removeprefix("step_n"))
        for part, value in bf16.items()
        if part.startswith("step_n") and "skipped" not in value
    ]
    if not measured_ns:
        return {"skipped": "no step of the bf16 model was measured"}
    nearest = min(measured_ns, key=lambda n: abs(math.log(n / n0)))
    step, hybrid = bf16[f"step_n{nearest}"], bf16.get(f"hybrid_n{nearest}", {})
    prompt, answer, horizon = bench.prompt_tokens, bench.answer_tokens, bench.hybrid.horizon
    rates = {m: step_tokens(m, nearest, prompt, answer) / step[m]["wall_s"] for m in ("naive", "packed")}
    k = bench.hybrid.k_estimate
    if "skipped" not in hybrid and hybrid:  # the real hybrid's measured rate and candidates verified a step
        rates["hybrid"] = hybrid["chain"]["tokens"] / hybrid["chain"]["wall_s"]
        k = round(sum(hybrid["verified_per_step"]) / len(hybrid["verified_per_step"]))
    report = {
        "what": (
            f"projections from rates measured on {device_name} ({bf16['shape']}, {bf16['dtype']}, synthetic chains) "
            "and the cost model, docs/DESIGN.md §7: not measurements"
            + ("; tiny shapes on a CPU exercise the arithmetic only" if bench.shapes == "tiny" else "")
        ),
        "chains": config.chains,
        "mean_reasoning_tokens": round(mean, 2),
        "length_source": source,
        "prompt_tokens": prompt,
        "answer_tokens": answer,
        "hybrid": {"k": k, "horizon": horizon, "rate": "measured" if "hybrid" in rates else "not measured"},
        "rates_at_n": nearest,
        "effective_tokens_per_s": {m: round(r, 1) for m, r in rates.items()},
        "paper_gpu_hours": config.paper_gpu_hours,
        "by_deletion_fraction": {},
    }
    for fraction in config.deletion_fractions:
        deletions = math.floor(n0 * fraction)
        methods = {}
        for method, rate in rates.items():
            tokens = chain_tokens(method, n0, deletions, prompt, answer, horizon, k)
            hours = config.chains * tokens / rate / 3600
            methods[method] = {
                "tokens_per_chain": round(tokens),
                "gpu_hours": round(hours, 3),
                "paper_over_projection": round(config.paper_gpu_hours / hours, 2),
            }
        report["by_deletion_fraction"][str(fraction)] = {"deletions_per_chain": deletions, **methods}
    return report


def summary(models: dict) -> dict:
    """The headline numbers of the parts that ran, per model and chain length."""
    report = {}
    for role, model in models.items():
        steps = {k.removeprefix("step_n"): v for k, v in model.items() if k.startswith("step_n") and "skipped" not in v}
        report[role] = {
            "max_abs_gap_nats": {n: step["agreement"]["max_abs_gap"] for n, step in steps.items()},
            "same_argmax": {n: step["agreement"]["same_argmax"] for n, step in steps.items()},
            "orders_equal": model["greedy_orders"].get("equal"),
            "packed_over_naive_wall": {n: step["packed_over_naive_wall"] for n, step in steps.items()},
            "packed_fraction_of_forward": {n: step["packed"]["fraction_of_forward"] for n, step in steps.items()},
            "recorded_over_plain_base_pass": {
                n: step["hybrid_base_pass"]["recorded_over_plain_wall"] for n, step in steps.items()
            },
            "hybrid_wall_per_step_s": {
                k.removeprefix("hybrid_n"): v["wall_per_step_s"]
                for k, v in model.items()
                if k.startswith("hybrid_n") and "skipped" not in v
            },
        }
    backoff = models["bf16"]["oom_backoff"]
    report["oom_backoff"] = backoff.get("skipped") or {k: backoff.get(k) for k in ("halved", "bitwise_equal", "error")}
    return report


def run(cfg: DictConfig) -> dict:
    bench = cfg.bench
    if bench.shapes not in SHAPES:
        raise ValueError(f"unknown bench.shapes {bench.shapes!r}; expected one of {sorted(SHAPES)}")
    device = torch.device(SHAPES[bench.shapes]["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench.shapes=gpu needs a CUDA device; on a CPU use bench.shapes=tiny")
    if cfg.runtime.get("num_threads"):
        torch.set_num_threads(int(cfg.runtime.num_threads))
    clock = Clock(bench.time_budget_s)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"
    settings = OmegaConf.to_container(bench, resolve=True)
    settings.pop("presets")
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name,
        "device_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        if device.type == "cuda"
        else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "settings": settings,
        "models": {},
    }
    for role in DTYPES:
        report["models"][role] = bench_model(role, bench, device, clock)
        gc.collect()  # the model is gone with bench_model's frame
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["summary"] = summary(report["models"])
    report["projection"] = projection(report["models"]["bf16"], bench, device_name)
    report["skipped"] = clock.skipped
    report["elapsed_s"] = round(clock.elapsed(), 1)
    text = json.dumps(report, indent=1)
    Path(bench.output).parent.mkdir(parents=True, exist_ok=True)
    Path(bench.output).write_text(text)
    print(text)
    return report
