"""The one entry point: `python -m src.run +experiment=NAME key=value ...`.

A known error (bad input or configuration the user can fix, a full disk, another job on the run
directory) ends the job with one line on stderr and exit status 1; any other exception, or any error
with `HYDRA_FULL_ERROR=1`, shows its traceback (src/errors.py draws the line). A job holds its run
directory (src/rundir.py) while it runs.
"""

from __future__ import annotations

import importlib

import hydra
from omegaconf import DictConfig

from src.errors import exit_on_known_error
from src.rundir import holding_run_dir

TASKS = {
    "prune": "src.prune_job",
    "demo": "src.tasks.demo",
    "bench_exact": "src.tasks.bench_exact",
    "train_surrogate": "src.tasks.train_surrogate",
    "calibrate_surrogate": "src.tasks.calibrate_surrogate",
    "eval_surrogate": "src.tasks.eval_surrogate",
    "bench_hybrid": "src.tasks.bench_hybrid",
    "bench_gpu": "src.tasks.bench_gpu",
    "bench_long_chain": "src.tasks.bench_long_chain",
    "hybrid_prune": "src.tasks.hybrid_prune",
    "pack_labels": "src.tasks.pack_labels",
    "generate": "src.tasks.generate",
    "distill": "src.tasks.distill",
    "analysis_categories": "src.tasks.analysis:categories",
    "analysis_dynamics": "src.tasks.analysis:dynamics",
    "analysis_cost": "src.tasks.analysis:cost",
    "viewer": "src.tasks.analysis:viewer",
    "export_demo": "src.tasks.analysis:export_demo",
    "merge": "src.tasks.merge",
}


def run_task(cfg: DictConfig):
    """Dispatch to the task's function: `module:function`, or `module` for its `run(cfg)`."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; expected one of {sorted(TASKS)}")
    module, _, function = TASKS[cfg.task].partition(":")
    task = getattr(importlib.import_module(module), function or "run")
    with holding_run_dir(cfg):
        return task(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_task(cfg)
    except Exception as err:
        exit_on_known_error(err)
        raise  # Hydra prints the traceback


if __name__ == "__main__":
    main()
