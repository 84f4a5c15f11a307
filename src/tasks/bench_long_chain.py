"""`+experiment=bench_long_chain` (and `bench_memory`, its first steps): one long chain pruned, in a process of its own.

The reasoning of `data`'s records, in file order, is joined into one chain of at least
`bench.reasoning_tokens` tokens (with the first record's question and answer). The job's pruner
(scorer=hybrid by default) prunes it to `bench.keep`, or makes `bench.steps` deletions, saving its state
as it goes: a rerun continues where a killed one stopped. `bench.exact_checks` steps, spread over the run,
are also scored exactly, to check the pruner's choice there.

While it runs, the numbers so far are on the progress bar and in progress.json. At the end, one JSON
object (bench_long_chain.json): the chain's length, the pruner's tokens
against what exact packed greedy would spend along the same path (src/cost_model.py: a step's price
depends only on the chain's length then), the hit rate at the checked steps, seconds a step in this
process, and its peak resident memory (`ru_maxrss`) after the model is loaded and at the end, against
`bench.target_gb`. The record goes to record.json.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from exact.greedy import GreedyTrace, check_regrets, hit_rate
from src.api import build_pruner, read_data, reasoning_length, setup_runtime
from src.checkpoint import PartialStates, fingerprint
from src.cost_model import chain_tokens
from src.data import BadInput
from src.models import load_model
from src.outputs import write_atomic
from src.pruning import advance
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


def so_far(segments, order: list[int], tokens: int, verified: list[int], checks: list[dict] | None) -> dict:
    """The bench's numbers for a run so far (a partial state, or the finished record): its tokens against
    exact packed greedy's along the same path, verified a step, and the exact checks' regrets and hit rate."""
    steps, checks = len(order), checks or []
    exact = chain_tokens("packed", len(segments.reasoning), steps, len(segments.prompt), len(segments.answer))
    regrets = check_regrets(order, checks)
    return {
        "steps": steps,
        "tokens": tokens,
        "exact_packed_tokens_same_path": round(exact),
        "fewer_tokens_than_exact": round(exact / max(tokens, 1), 2),
        "verified_per_step": round(sum(verified) / max(steps, 1), 2),
        "exact_checks": {
            "steps": [c["step"] for c in checks],
            "regret_nats": [round(r, 4) for r in regrets],
            "hit_rate": hit_rate(regrets),
            "tokens": [c["tokens"] for c in checks],
        },
    }


def progress(out: Path, segments, bar: tqdm, save: Callable[[GreedyTrace], None]) -> Callable[[GreedyTrace], None]:
    """An `on_state` callback: `save` the state, and show the numbers so far on `bar` and in progress.json."""

    def on_state(trace: GreedyTrace) -> None:
        save(trace)
        now = so_far(
            segments, trace.deletion_order, trace.tokens_processed, trace.verified_per_step, trace.exact_checks
        )
        checks = now["exact_checks"]
        bar.set_postfix(
            fewer=f"{now['fewer_tokens_than_exact']}x",
            verified=now["verified_per_step"],
            hits=f"{round((checks['hit_rate'] or 0) * len(checks['steps']))}/{len(checks['steps'])}",
        )
        write_atomic(
            out / "progress.json", json.dumps({**now, "peak_rss_gb": round(peak_rss_gb(), 3), "finished": False})
        )

    return on_state


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    spec = cfg.bench
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tracker = start_tracking(cfg, out, "bench_long_chain")
    model, tokenizer = load_model(**cfg.model)
    pruner = build_pruner(cfg, model, tokenizer)
    loaded = peak_rss_gb()
    chain = long_chain(cfg, pruner, spec.reasoning_tokens)
    bench = json.dumps(OmegaConf.to_container(spec, resolve=True), sort_keys=True)  # the run's length and checks
    key = hashlib.sha256((fingerprint(chain, cfg) + bench).encode()).hexdigest()
    partials = PartialStates(out, cfg.runtime.checkpoint_every_s)
    resume = partials.load(chain["id"], key)
    done_before = len(resume.deletion_order) if resume else 0
    segments = pruner.encode(chain["question"], chain["reasoning"], chain["answer"])
    began = time.perf_counter()
    with tqdm(desc=chain["id"], unit="del", initial=done_before, disable=not cfg.runtime.progress) as bar:
        result = pruner.prune(
            chain["question"],
            chain["reasoning"],
            chain["answer"],
            [spec.keep],
            id=chain["id"],
            max_deletions=spec.steps,
            exact_checks=spec.exact_checks,
            resume=resume,
            on_state=progress(out, segments, bar, partials.saver(chain["id"], key)),
            on_step=advance(bar),
        )
    seconds = time.perf_counter() - began
    record, peak = result.record.to_json(), peak_rss_gb()
    write_atomic(out / "record.json", json.dumps(record))
    cost = record["cost"]
    now = so_far(
        segments,
        record["deletion_order"],
        cost["tokens_processed"],
        cost["verified_per_step"],
        record.get("exact_checks"),
    )
    report = {
        "model": cfg.model.path,
        "scorer": cost.get("scorer"),
        "threads": torch.get_num_threads(),
        "n_reasoning_tokens": record["n_reasoning_tokens"],
        **now,
        "steps_this_process": now["steps"] - done_before,
        "seconds_per_step_this_process": round(seconds / max(now["steps"] - done_before, 1), 2),
        "peak_rss_gb_model_loaded": round(loaded, 3),
        "peak_rss_gb": round(peak, 3),
        "target_gb": spec.target_gb,
        "within_target": peak <= spec.target_gb,
    }
    write_atomic(out / "progress.json", json.dumps({**report, "finished": True}))
    partials.remove(chain["id"])
    publish(out, tracker, "bench_long_chain", report, {})
    tracker.finish()
    print(json.dumps(report, indent=2))
    return report
