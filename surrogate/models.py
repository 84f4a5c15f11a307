"""Surrogate models: features of a candidate -> a score that ranks the candidates of one greedy step.

- `mlp`: the paper's two-layer MLP; `linear`: the AT2-style ablation, one weight per feature and no bias.
- `residual=True` adds the model's output to the candidate's first-order score f(q), so the network
  learns only the residual s(q) − f(q): the deletion's effect on the tokens after the next one.
- `first_order`: no network at all; it ranks by f(q), the free baseline every model must beat.
- `horizon` h > 0 makes the prior the lookahead score f_h(q), which reruns the h tokens after the
  next one exactly (h tokens a candidate) and keeps the base log-probs of the rest.

Inputs are standardised with statistics of the training set, stored in the model with its feature
set and its calibration (`surrogate.calibration`), so a checkpoint is self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from surrogate.features import feature_blocks

KINDS = ("mlp", "linear", "first_order")


class Surrogate(nn.Module):
    """Scores candidates from their feature rows (and first-order scores); higher = safer to delete."""

    def __init__(
        self,
        n_features: int,
        kind: str = "mlp",
        hidden: int = 256,
        feature_set: str = "attention",
        residual: bool = False,
        horizon: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown surrogate kind {kind!r}; expected one of {KINDS}")
        feature_blocks(feature_set)  # validates the name
        if horizon < 0:
            raise ValueError(f"horizon must be at least 0, got {horizon}")
        if kind == "first_order":
            n_features, feature_set, residual = 0, "", True
        self.config = {
            "n_features": n_features,
            "kind": kind,
            "hidden": hidden,
            "feature_set": feature_set,
            "residual": residual,
            "horizon": horizon,  # the prior is the lookahead score f_h: h tokens after the next one rerun exactly
        }
        self.calibration: dict[str, Any] | None = None  # set by surrogate.calibration.calibrate
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, 1))
        elif kind == "linear":
            self.net = nn.Linear(n_features, 1, bias=False)
        else:
            self.net = None

    @property
    def feature_set(self) -> str:
        return self.config["feature_set"]

    def fit_normalizer(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of the training features."""
        self.mean.copy_(features.float().mean(0))
        self.std.copy_(features.float().std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted scores (float64); `prior` (the first-order scores) is needed when the model is residual."""
        if self.config["residual"] and prior is None:
            raise ValueError("a residual surrogate needs the candidates' first-order scores (prior)")
        if self.net is None:
            return prior.double()
        out = self.net((features.float() - self.mean) / self.std).squeeze(-1).double()
        return out + prior.double().to(out.device) if self.config["residual"] else out

    def save(self, path: str | Path, meta: dict[str, Any]) -> None:
        """Write weights, architecture, calibration and `meta` (pruner model, metrics …) to one file."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        blob = {"config": self.config, "state_dict": self.state_dict(), "calibration": self.calibration, "meta": meta}
        torch.save(blob, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[Surrogate, dict[str, Any]]:
        """(surrogate in eval mode, its meta)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        model.calibration = blob.get("calibration")
        return model.eval(), blob["meta"]
