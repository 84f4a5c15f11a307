"""Surrogate models: features of a candidate -> a score that ranks candidates within a step.

`mlp` is the paper's two-layer MLP; `linear` is the AT2-style ablation, one weight per feature (per
layer × head) and no bias. Inputs are standardised with statistics of the training set, stored in
the model with its feature set, so a checkpoint is self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from surrogate.features import FEATURE_SETS

KINDS = ("mlp", "linear")


class Surrogate(nn.Module):
    """Scores candidates from their (layers · heads) attention features; higher = safer to delete."""

    def __init__(self, n_features: int, kind: str = "mlp", hidden: int = 256, feature_set: str = "attention"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown surrogate kind {kind!r}; expected one of {KINDS}")
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {feature_set!r}; expected one of {FEATURE_SETS}")
        self.config = {"n_features": n_features, "kind": kind, "hidden": hidden, "feature_set": feature_set}
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Linear(n_features, 1, bias=False)

    def fit_normalizer(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of the training features."""
        self.mean.copy_(features.float().mean(0))
        self.std.copy_(features.float().std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features.float() - self.mean) / self.std).squeeze(-1)

    def save(self, path: str | Path, meta: dict[str, Any]) -> None:
        """Write weights, architecture and `meta` (pruner model, feature set, metrics …) to one file."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": self.config, "state_dict": self.state_dict(), "meta": meta}, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[Surrogate, dict[str, Any]]:
        """(surrogate in eval mode, its meta)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        return model.eval(), blob["meta"]
