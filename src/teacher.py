"""Teacher chains by rejection sampling, and the teacher's zero-shot accuracy (`+experiment=generate`, and
the first stage of `+experiment=distill`).

For each train problem the teacher draws `samples` answers, seeded by the problem's id (`problem_seed`),
so a resumed run draws what an uninterrupted one would; one correct answer is kept at random (also
seeded per problem) and split into reasoning and answer, giving a record ready for pruning.
Problems with no correct sample are dropped and counted. Records are appended as they finish, so
a rerun with the same run directory resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from src.answers import is_correct, split_output
from src.data import BadInput, read_jsonl
from src.distill.evaluate import answer_problems, summarize
from src.generation import Generator, chat_prompts
from src.outputs import RecordWriter, write_jsonl
from src.problems import load_benchmark

log = logging.getLogger(__name__)


def problem_seed(seed: int, problem_id: str) -> int:
    """The sampling seed of one problem: a stable hash of the run's `seed` and the problem id (63 bits)."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def choose_sample(samples: list[str], problem: dict[str, Any], benchmark: DictConfig, seed: int) -> dict | None:
    """One correct sample as {reasoning, answer, n_correct}, chosen at random (seeded by problem id)."""
    correct = []
    for text in samples:
        parts = split_output(text, benchmark.answer_style)
        if parts and is_correct(parts[1], problem["gold"], benchmark.checker, benchmark.answer_style):
            correct.append(parts)
    if not correct:
        return None
    reasoning, answer = random.Random(f"{seed}:{problem['id']}").choice(correct)
    return {"reasoning": reasoning, "answer": answer, "n_correct": len(correct)}


def sample_chains(
    generate: Generator, tokenizer, problems: list[dict], cfg: DictConfig, out: Path, chunk: int = 32
) -> dict[str, int]:
    """Rejection-sample every problem not yet in records.jsonl or dropped.jsonl; returns the counts."""
    teacher, benchmark = cfg.teacher, cfg.benchmark
    dropped_path = out / "dropped.jsonl"
    dropped = set()
    if dropped_path.exists():  # a line torn by a kill is passed over: that problem is sampled again
        dropped = {str(r["id"]) for _, r in read_jsonl(dropped_path) if not isinstance(r, BadInput) and "id" in r}
    with RecordWriter(out / "records.jsonl") as writer, dropped_path.open("a", encoding="utf-8") as drops:
        todo = [p for p in problems if p["id"] not in writer.done and p["id"] not in dropped]
        bar = tqdm(
            total=len(problems),
            initial=len(problems) - len(todo),
            desc="teacher",
            unit="problem",
            disable=not cfg.runtime.progress,
        )
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            prompts = chat_prompts(tokenizer, [p["question"] for p in batch], benchmark.system_prompt)
            samples = generate(
                prompts,
                teacher.samples,
                teacher.temperature,
                teacher.top_p,
                teacher.max_new_tokens,
                [problem_seed(teacher.seed, p["id"]) for p in batch],
            )
            for problem, texts in zip(batch, samples):
                chosen = choose_sample(texts, problem, benchmark, teacher.seed)
                if chosen is None:
                    drops.write(json.dumps({"id": problem["id"], "n_samples": len(texts)}) + "\n")
                    drops.flush()
                    dropped.add(problem["id"])
                    continue
                writer.write(
                    {
                        "id": problem["id"],
                        "question": problem["question"],
                        **chosen,
                        "n_samples": len(texts),
                        "gold": problem["gold"],
                        "dataset": problem["dataset"],
                        "teacher": teacher.model.path,
                    }
                )
            bar.update(len(batch))
        bar.close()
        return {"problems": len(problems), "kept": len(writer.done), "dropped": len(dropped)}


def zero_shot(generate: Generator, tokenizer, problems: list[dict], cfg: DictConfig, out: Path) -> dict[str, float]:
    """Greedy answers to the test problems (Table 2), graded, written to zero_shot.jsonl."""
    graded = answer_problems(generate, tokenizer, problems, cfg.benchmark, cfg.teacher.max_new_tokens)
    write_jsonl(out / "zero_shot.jsonl", graded)
    return summarize(graded)


def generate_chains(cfg: DictConfig, out: Path, tracker=None) -> dict[str, Any]:
    """Teacher records in `out/records.jsonl` (and `summary.json`); the distillation pipeline's first stage."""
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    splits = load_benchmark(cfg.benchmark)
    model = OmegaConf.to_container(cfg.teacher.model, resolve=True)  # a plain spec: load_model's arguments
    generate, tokenizer = instantiate(cfg.teacher.generator, model=model, progress=cfg.runtime.progress)
    summary: dict[str, Any] = sample_chains(generate, tokenizer, splits["train"], cfg, out)
    if cfg.teacher.zero_shot:
        summary["zero_shot"] = zero_shot(generate, tokenizer, splits["test"], cfg, out)
    summary["wall_s"] = round(time.perf_counter() - began, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("teacher: kept %d of %d problems, dropped %d", summary["kept"], summary["problems"], summary["dropped"])
    if tracker is not None:
        tracker.summary({f"teacher/{k}": v for k, v in summary.items() if not isinstance(v, dict)})
    return summary
