"""`+experiment=distill`: teacher chains → every pruning method → one student per (method, keep) → results.

Stages, each resumable in the run directory:
  teacher/records.jsonl          rejection-sampled teacher chains (skipped when distill.teacher_records is given)
  pruned/METHOD/records.jsonl    each method's deletion order over every chain (the shared record schema)
  sft/NAME.jsonl                 the training chains, pruned to ⌊keep · L⌋ student tokens (±1)
  students/NAME/                 the best student by dev accuracy, its test answers and training log
  results.csv, accuracy.png      accuracy and mean generated reasoning length per method × keep fraction
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import AutoTokenizer

from src import prune_job
from src.api import setup_runtime
from src.data import BadInput, read_jsonl
from src.distill.lengths import match_length
from src.distill.report import ORIGINAL, ResultsTable, plot_results
from src.distill.student import evaluate_student, train_student
from src.models import resolve_model_path
from src.outputs import write_jsonl
from src.problems import load_benchmark
from src.teacher import generate_chains
from src.tracking import start_tracking

log = logging.getLogger(__name__)


def load_tokenizer(model: DictConfig):
    """The tokenizer of a model spec, without loading its weights."""
    return AutoTokenizer.from_pretrained(resolve_model_path(model.path, model.cache_dir))


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by id; a bad line is reported (the prune stage has already skipped it) and left out."""
    records = {}
    for lineno, row in read_jsonl(path):
        if isinstance(row, BadInput) or "id" not in row:
            log.warning("skipping %s", row if isinstance(row, BadInput) else f"{path}:{lineno}: no 'id' field")
        else:
            records[str(row["id"])] = row
    return records


def prune_chains(cfg: DictConfig, method: str, chains: Path, out: Path) -> Path:
    """Run `method` (a config in distill.pruners) over the teacher chains into out/records.jsonl.

    The stage reads the chains with this job's `data` settings (`data.answer_delimiter` among them) and the
    benchmark's system prompt.
    """
    pruner = OmegaConf.to_container(cfg.distill.pruners[method])  # its ${data.*} read the stage's data below
    keeps = sorted(cfg.distill.keep_fractions)
    # Greedy rankings stop at their smallest keep fraction; go a margin further so that the student-token
    # target (a different tokenizer may need a few more deletions) is always covered.
    pruner["prune"]["keep_fractions"] = keeps + [round(max(keeps[0] - cfg.distill.margin, 0.01), 4)]
    data = {
        "path": str(chains),
        "format": "records",
        "limit": None,
        "reasoning_tokens": None,
        "system_prompt": cfg.benchmark.system_prompt,
        "max_reasoning_tokens": cfg.distill.max_reasoning_tokens,
    }
    stage = cfg.copy()
    with open_dict(stage):
        stage.pruner = pruner
        stage.data.update(data)
        stage.output_dir = str(out)
        stage.logger = {"_target_": "src.tracking.untracked"}  # the distill run tracks the whole loop
    prune_job.run(stage)
    return out / "records.jsonl"


def sft_sets(
    cfg: DictConfig, teacher: dict[str, dict], pruned: dict[str, dict[str, dict]], student_tokenizer, out: Path
) -> dict[tuple[str, float], list[dict]]:
    """Training chains per (method, keep): the chains every method pruned, cut to the student-token target."""
    ids = sorted(set(teacher).intersection(*(set(records) for records in pruned.values())))
    if not ids:
        raise ValueError("no teacher chain was pruned by every method; see pruned/*/skipped.jsonl")
    sets: dict[tuple[str, float], list[dict]] = {(ORIGINAL, 1.0): []}
    for i in ids:
        chain = teacher[i]
        tokens = len(student_tokenizer(chain["reasoning"], add_special_tokens=False)["input_ids"])
        sets[(ORIGINAL, 1.0)].append({**_chain(chain), "student_tokens": tokens, "target_tokens": tokens})
    for method, records in pruned.items():
        for keep in cfg.distill.keep_fractions:
            rows = sets.setdefault((method, float(keep)), [])
            for i in ids:
                r = records[i]
                matched = match_length(
                    r["reasoning"], r["reasoning_tokens"], r["deletion_order"], student_tokenizer, keep, i
                )
                rows.append(
                    {
                        **_chain(teacher[i]),
                        "reasoning": matched.text,
                        "student_tokens": matched.length,
                        "target_tokens": matched.target,
                    }
                )
    (out / "sft").mkdir(parents=True, exist_ok=True)
    for (method, keep), rows in sets.items():
        write_jsonl(out / "sft" / f"{_name(method, keep)}.jsonl", rows)
    return sets


def _chain(record: dict) -> dict:
    return {k: record[k] for k in ("id", "question", "reasoning", "answer")}


def _name(method: str, keep: float) -> str:
    return method if method == ORIGINAL else f"{method}-{keep:g}"


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    tracker = start_tracking(cfg, out, "distill")
    splits = load_benchmark(cfg.benchmark)
    chains = Path(cfg.distill.teacher_records) if cfg.distill.teacher_records else out / "teacher" / "records.jsonl"
    if not cfg.distill.teacher_records:
        generate_chains(cfg, out / "teacher", tracker)
    teacher = read_records(chains)
    pruned = {m: read_records(prune_chains(cfg, m, chains, out / "pruned" / m)) for m in cfg.distill.methods}
    sets = sft_sets(cfg, teacher, pruned, load_tokenizer(cfg.student.model), out)
    table = ResultsTable(out / "results.csv")
    delimiter = cfg.data.answer_delimiter  # between reasoning and answer, as the pruner joined them
    for (method, keep), rows in sets.items():
        if table.has(method, keep):
            continue
        name = _name(method, keep)
        folder = out / "students" / name
        log.info("student %s: %d chains", name, len(rows))
        logger = CSVLogger(str(folder), name="", version="")
        model, tokenizer, info = train_student(
            cfg.student, rows, splits["dev"], cfg.benchmark, delimiter, folder, logger, cfg.runtime.progress
        )
        if rank_zero_only.rank != 0:  # with DDP/FSDP/DeepSpeed every rank trains; rank 0 evaluates and writes
            continue
        if cfg.student.save_model:
            model.save_pretrained(folder / "model")
            tokenizer.save_pretrained(folder / "model")
        graded, summary = evaluate_student(
            cfg.student, model, tokenizer, splits["test"], cfg.benchmark, folder, cfg.runtime.progress
        )
        write_jsonl(folder / "test.jsonl", graded)
        row = {
            "method": method,
            "keep": keep,
            "accuracy": summary["accuracy"],
            "mean_reasoning_tokens": summary["mean_reasoning_tokens"],
            "n_test": summary["n"],
            "dev_accuracy": info["dev_accuracy"],
            "n_train": len(rows),
            "mean_train_tokens": sum(r["student_tokens"] for r in rows) / len(rows),
            "train_wall_s": info["train_wall_s"],
        }
        table.add(row)
        tracker.log({f"{name}/{k}": v for k, v in row.items() if k not in ("method", "keep")})
    if rank_zero_only.rank != 0:
        return {}
    plot = plot_results(table.rows, out / "accuracy.png", f"{cfg.benchmark.name}: students by pruning method")
    tracker.image("accuracy", plot)
    tracker.save(out / "results.csv")
    summary = {"results": str(out / "results.csv"), "plot": str(plot), "wall_s": round(time.perf_counter() - began, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    tracker.finish()
    print((out / "results.csv").read_text())
    print(f"Run directory: {out}  (results.csv, accuracy.png, students/, pruned/, sft/)")
    return summary
