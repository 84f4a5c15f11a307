"""Experiment tracking: W&B (offline by default, `wandb sync` later) or nothing, behind one small API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class Tracker:
    """Logs metrics, a run summary and files; a no-op when tracking is off."""

    def __init__(self, run=None):
        self.run = run

    @property
    def location(self) -> str | None:
        return getattr(self.run, "dir", None) if self.run is not None else None

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(metrics)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def image(self, key: str, path: str | Path) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))})

    def save(self, path: str | Path) -> None:
        if self.run is not None:
            self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


def start_tracking(cfg: DictConfig, run_dir: str | Path, job: str) -> Tracker:
    """A Tracker for `cfg.logger` (`wandb` or `none`), writing under `run_dir`."""
    logger = cfg.logger
    if logger.name == "none":
        return Tracker()
    if logger.name != "wandb":
        raise ValueError(f"unknown logger {logger.name!r}; expected 'wandb' or 'none'")
    import wandb

    run = wandb.init(
        project=logger.project,
        entity=logger.get("entity"),
        mode=logger.mode,
        dir=str(run_dir),
        name=f"{job}-{Path(run_dir).name}",
        job_type=job,
        tags=list(logger.get("tags") or []),
        config=OmegaConf.to_container(cfg, resolve=True),
        settings=wandb.Settings(silent=True, console="off"),
    )
    return Tracker(run)


def publish(out: str | Path, tracker: Tracker, name: str, numbers: dict[str, Any], plots: dict[str, Path]) -> Path:
    """Write `numbers` to out/NAME.json and log it and the plots (PNG) to the tracker."""
    import json

    path = Path(out) / f"{name}.json"
    path.write_text(json.dumps(numbers, indent=2, ensure_ascii=False))
    tracker.save(path)
    for key, plot in plots.items():
        tracker.image(key, plot)
    return path
