"""Lightning training of a surrogate on label groups, with the Pearson loss and whole-group batches."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader

from surrogate.groups import Group
from surrogate.loss import group_pearson, pearson_loss
from surrogate.models import Surrogate


@dataclass
class GroupBatch:
    """Several groups flattened: features (N, F), first-order scores and labels (N,), and each row's group index."""

    features: torch.Tensor
    prior: torch.Tensor
    labels: torch.Tensor
    group: torch.Tensor
    n_groups: int


def collate(groups: list[Group]) -> GroupBatch:
    sizes = torch.tensor([len(g.labels) for g in groups])
    return GroupBatch(
        features=torch.cat([g.features for g in groups]).float(),
        prior=torch.cat([g.prior for g in groups]),
        labels=torch.cat([g.labels for g in groups]),
        group=torch.repeat_interleave(torch.arange(len(groups)), sizes),
        n_groups=len(groups),
    )


def held_out(record_ids: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """The validation records among `record_ids`: a seeded shuffle's first `val_fraction` (at least one of two)."""
    records = sorted(set(record_ids))
    random.Random(seed).shuffle(records)
    n_val = max(1, round(len(records) * val_fraction)) if len(records) > 1 else 0
    return set(records[:n_val])


def split_by_record(groups: list[Group], val_fraction: float, seed: int) -> tuple[list[Group], list[Group]]:
    """Train and validation groups, split by record so that no record is on both sides."""
    held = held_out((g.record_id for g in groups), val_fraction, seed)
    return [g for g in groups if g.record_id not in held], [g for g in groups if g.record_id in held]


class GroupDataModule(L.LightningDataModule):
    """Batches of whole groups (steps), so every Pearson term sees all candidates of its step."""

    def __init__(self, train: list[Group], val: list[Group], groups_per_batch: int = 16, seed: int = 0):
        super().__init__()
        self.train, self.val, self.groups_per_batch, self.seed = train, val, groups_per_batch, seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train, batch_size=self.groups_per_batch, shuffle=True, collate_fn=collate, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.groups_per_batch, collate_fn=collate)


class SurrogateModule(L.LightningModule):
    """Trains `Surrogate` with 1 − Pearson per group (of its prediction, f + g when residual), plus the optional
    top-one term of `pearson_loss`; logs `val_pearson`."""

    def __init__(
        self,
        surrogate: Surrogate,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        max_steps: int = 1000,
        top1_weight: float = 0.0,
        top1_temperature: float = 0.5,
    ):
        super().__init__()
        self.surrogate = surrogate
        self.lr, self.weight_decay, self.max_steps = lr, weight_decay, max_steps
        self.top1_weight, self.top1_temperature = top1_weight, top1_temperature
        self._val_r: list[torch.Tensor] = []

    def training_step(self, batch: GroupBatch, batch_idx: int) -> torch.Tensor:
        predicted = self.surrogate(batch.features, batch.prior)
        loss = pearson_loss(
            predicted, batch.labels, batch.group, batch.n_groups, self.top1_weight, self.top1_temperature
        )
        self.log("train_loss", loss, batch_size=batch.n_groups, prog_bar=True)
        return loss

    def validation_step(self, batch: GroupBatch, batch_idx: int) -> None:
        predicted = self.surrogate(batch.features, batch.prior)
        r, valid = group_pearson(predicted, batch.labels, batch.group, batch.n_groups)
        self._val_r.append(r[valid].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        r = torch.cat(self._val_r) if self._val_r else torch.zeros(0)
        self.log("val_pearson", r.mean() if len(r) else torch.tensor(0.0), prog_bar=True)
        self._val_r.clear()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
