"""Student SFT: a LightningModule over any HF causal LM, with the loss on the assistant's reply only.

An example is prompt ‖ reasoning ‖ answer, built by the same chat-template code as the pruner's
segments; only the reasoning and answer tokens (including the end-of-turn tokens, so the student
learns to stop) carry labels. Validation answers the dev problems greedily and logs `dev/accuracy`,
which picks the best checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from transformers import get_cosine_schedule_with_warmup

from exact.sequence import encode
from src.distill.evaluate import answer_problems
from src.generation import HFGenerator

IGNORE = -100


def sft_example(
    tokenizer, question: str, reasoning: str, answer: str, system_prompt: str | None, answer_delimiter: str
) -> dict[str, torch.Tensor]:
    """Token ids of one chat exchange, and labels that mask the prompt."""
    segments = encode(tokenizer, question, reasoning, answer, system_prompt, answer_delimiter)
    ids = torch.cat([segments.prompt, segments.reasoning, segments.answer])
    labels = ids.clone()
    labels[: len(segments.prompt)] = IGNORE
    return {"input_ids": ids, "labels": labels}


def collate(examples: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; padding is masked from attention and loss."""
    width = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), width), pad_id),
        "labels": torch.full((len(examples), width), IGNORE),
        "attention_mask": torch.zeros(len(examples), width, dtype=torch.long),
    }
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        batch["input_ids"][row, :n] = e["input_ids"]
        batch["labels"][row, :n] = e["labels"]
        batch["attention_mask"][row, :n] = 1
    return batch


class StudentSFT(L.LightningModule):
    """Causal-LM fine-tuning with AdamW and cosine decay; dev accuracy by greedy generation."""

    def __init__(self, model, tokenizer, benchmark: DictConfig, optim: DictConfig, max_new_tokens: int):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.benchmark, self.optim = benchmark, optim
        self.max_new_tokens = max_new_tokens
        self.dev_accuracy = MeanMetric()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, problems: list[dict[str, Any]], batch_idx: int) -> None:
        generate = HFGenerator(self.model, self.tokenizer, batch_size=len(problems), progress=False)
        for graded in answer_problems(generate, self.tokenizer, problems, self.benchmark, self.max_new_tokens):
            self.dev_accuracy.update(float(graded["correct"]))

    def on_validation_epoch_end(self) -> None:
        self.log("dev/accuracy", self.dev_accuracy.compute(), prog_bar=True)
        self.dev_accuracy.reset()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.optim.lr,
            weight_decay=self.optim.weight_decay,
        )
        total = self.trainer.max_steps
        schedule = get_cosine_schedule_with_warmup(optimizer, int(self.optim.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def loaders(
    examples: list[dict[str, torch.Tensor]], dev: list[dict[str, Any]], micro_batch: int, eval_batch: int, pad_id: int
) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(
        examples, batch_size=micro_batch, shuffle=True, collate_fn=lambda b: collate(b, pad_id), drop_last=False
    )
    return train, DataLoader(dev, batch_size=eval_batch, collate_fn=list)


def accumulation(effective_batch: int, micro_batch: int, devices: int | str, num_nodes: int = 1) -> int:
    """Gradient-accumulation steps so that micro_batch × steps × devices × nodes = effective_batch."""
    n_devices = devices if isinstance(devices, int) else max(torch.cuda.device_count(), 1)
    per_step = micro_batch * n_devices * num_nodes
    if effective_batch % per_step:
        raise ValueError(
            f"effective_batch={effective_batch} is not a multiple of micro_batch × devices × nodes = {per_step}"
        )
    return effective_batch // per_step
