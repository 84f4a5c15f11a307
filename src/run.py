"""The one entry point: `python -m src.run +experiment=NAME key=value ...`.

A known error (bad input or configuration the user can fix) ends the job with one line on stderr and
exit status 1; any other exception, or any error with `HYDRA_FULL_ERROR=1`, shows its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from src.models import ModelNotFound

PROJECT_PACKAGES = tuple(Path(__file__).resolve().parents[1] / name for name in ("src", "exact", "surrogate"))
KNOWN_ERRORS = (FileNotFoundError, ModelNotFound, MissingMandatoryValue)

TASKS = {
    "prune": "src.prune_job",
    "demo": "src.tasks.demo",
    "bench_exact": "src.tasks.bench_exact",
    "train_surrogate": "src.tasks.train_surrogate",
    "eval_surrogate": "src.tasks.eval_surrogate",
    "bench_hybrid": "src.tasks.bench_hybrid",
    "bench_gpu": "src.tasks.bench_gpu",
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
    return getattr(importlib.import_module(module), function or "run")(cfg)


def raised_by_project(err: BaseException) -> bool:
    """Whether the innermost frame of `err`'s traceback is the project's own code (not a library's)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(where.is_relative_to(package) for package in PROJECT_PACKAGES)


def is_known_error(err: BaseException) -> bool:
    """A missing file or model, a mandatory config value left unset, or a ValueError the project raised
    itself (bad input or an invalid config value). A ValueError from inside a library is a bug: it keeps its trace."""
    return isinstance(err, KNOWN_ERRORS) or (isinstance(err, ValueError) and raised_by_project(err))


def error_line(err: BaseException) -> str:
    """What the user reads for a known error."""
    if isinstance(err, MissingMandatoryValue):
        return f"error: config value {err.full_key} is not set; give it on the command line: {err.full_key}=..."
    return f"error: {err}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_task(cfg)
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not is_known_error(err):
            raise  # Hydra prints the traceback
        print(error_line(err), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
