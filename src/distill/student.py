"""Train one student on one SFT set and grade it on the test split."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from src.distill.evaluate import answer_problems, summarize
from src.distill.sft import StudentSFT, accumulation, loaders, sft_example
from src.generation import HFGenerator, VLLMGenerator
from src.models import load_model


def _with_lora(model, lora: DictConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("student.lora needs the [lora] extra: pip install 'greedy-prune[lora]'") from None
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train_student(
    spec: DictConfig,
    chains: list[dict[str, Any]],
    dev: list[dict[str, Any]],
    benchmark: DictConfig,
    answer_delimiter: str,
    out: Path,
    logger=False,
    progress: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune a fresh `spec.model` on `chains` ({question, reasoning, answer}, joined by `answer_delimiter`
    as the pruner joins them); the best dev checkpoint.

    Returns (model, tokenizer, info) with the best dev accuracy, the step it came from, and wall time.
    """
    began = time.perf_counter()
    model, tokenizer = load_model(**spec.model)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if spec.lora:
        model = _with_lora(model, spec.lora)
    model.train()
    examples = [
        sft_example(tokenizer, c["question"], c["reasoning"], c["answer"], benchmark.system_prompt, answer_delimiter)
        for c in chains
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train, dev_loader = loaders(examples, dev, spec.micro_batch, spec.eval.batch_size, pad)
    module = StudentSFT(model, tokenizer, benchmark, spec.optim, spec.eval.max_new_tokens)
    trainer_args = OmegaConf.to_container(spec.trainer, resolve=True)
    best = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor="dev/accuracy",
        mode="max",
        save_top_k=1,
        save_weights_only=True,
    )
    steps = accumulation(spec.effective_batch, spec.micro_batch, trainer_args["devices"], trainer_args["num_nodes"])
    trainer = L.Trainer(
        **trainer_args,
        max_steps=spec.max_steps,
        accumulate_grad_batches=steps,
        val_check_interval=spec.val_every_steps * steps,  # counted in micro-batches
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=[best],
        logger=logger,
        default_root_dir=str(out),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, train, dev_loader)
    if best.best_model_path:
        module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    model = module.model.merge_and_unload() if spec.lora else module.model
    model.eval()
    info = {
        "dev_accuracy": float(best.best_model_score) if best.best_model_score is not None else None,
        "train_examples": len(examples),
        "train_wall_s": round(time.perf_counter() - began, 2),
    }
    return model, tokenizer, info


def evaluate_student(
    spec: DictConfig, model, tokenizer, test: list[dict[str, Any]], benchmark: DictConfig, out: Path, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Greedy answers on the test split with the hf or vllm backend; the vllm backend loads the saved student."""
    if spec.eval.backend == "vllm":
        if not (out / "model").exists():
            raise ValueError("student.eval.backend=vllm needs student.save_model=true")
        generate = VLLMGenerator(str(out / "model"), **spec.eval.vllm)
    else:
        generate = HFGenerator(model, tokenizer, spec.eval.batch_size, progress)
    graded = answer_problems(generate, tokenizer, test, benchmark, spec.eval.max_new_tokens)
    return graded, summarize(graded)
