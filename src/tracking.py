"""Experiment tracking: W&B (offline by default, `wandb sync` later) or nothing, behind one small API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
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
    """The Tracker `cfg.logger` instantiates (conf/logger: wandb or none), for the job `job` writing under `run_dir`."""
    config = OmegaConf.to_container(cfg, resolve=True)
    # not recursive: the job config it records holds other `_target_` nodes
    return instantiate(cfg.logger, run_dir=str(run_dir), job=job, run_config=config, _recursive_=False, _convert_="all")


def untracked(run_dir: str, job: str, run_config: dict[str, Any]) -> Tracker:
    """No tracking (`logger=none`): a Tracker that does nothing."""
    return Tracker()


def wandb_tracker(
    run_dir: str,
    job: str,
    run_config: dict[str, Any],
    project: str = "greedy-prune",
    entity: str | None = None,
    mode: str = "offline",
    tags: list[str] | None = None,
) -> Tracker:
    """A W&B run for the job (`logger=wandb`), offline by default: `wandb sync` uploads it later."""
    import wandb

    run = wandb.init(
        project=project,
        entity=entity,
        mode=mode,
        dir=run_dir,
        name=f"{job}-{Path(run_dir).name}",
        job_type=job,
        tags=list(tags or []),
        config=run_config,
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
