"""`+experiment=train_surrogate`: fit a surrogate on exact labels with Lightning; save it with its metrics."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.api import setup_runtime
from src.surrogate_training import train


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    return train(cfg, list(cfg.surrogate.labels), cfg.surrogate.output, Path(cfg.output_dir))
