"""What an error does to a job, decided in one place, by exception type.

A job works through its records one at a time. An exception raised while it reads, checks, tokenizes,
prunes or writes one record is that record's **failure**: the record goes to skipped.jsonl as
`{id, where, reason}` and the job moves on to the next. These end the whole job instead, even when
raised inside a record:

- `JOB_ERRORS`, which concern every record: the file system (`OSError`: a full disk, a read-only or
  missing run directory), the model (`ModelNotFound`), the config (any OmegaConf error), and another
  job on the run directory (`RunDirInUse`);
- `TooManyFailures`: `runtime.max_consecutive_failures` records failed in a row at the same stage, or
  no record was pruned and some failed, which means a bug or a broken setup rather than bad input;
- anything at all with `HYDRA_FULL_ERROR=1`, so that a failing record shows its traceback.

`KeyboardInterrupt` and `SystemExit` are never caught. A job ended by a known error (`is_known_error`)
prints one line, `error: …`, and exits with status 1; any other error keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

PROJECT_PACKAGES = tuple(Path(__file__).resolve().parents[1] / name for name in ("src", "exact", "surrogate"))


class ModelNotFound(RuntimeError):
    """The model could not be located or loaded."""


class RunDirInUse(RuntimeError):
    """Another live job holds the run directory (src/rundir.py)."""


class TooManyFailures(RuntimeError):
    """Records keep failing (too many in a row, or all that were tried): the job stops rather than skip them all."""


JOB_ERRORS = (OSError, ModelNotFound, OmegaConfBaseException, RunDirInUse, TooManyFailures)


def full_errors() -> bool:
    """Whether `HYDRA_FULL_ERROR=1` asks for every traceback (a record's failure then ends the job)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def ends_job(err: Exception) -> bool:
    """Whether `err`, raised while a job works on one record, ends the job rather than skip the record."""
    return isinstance(err, JOB_ERRORS) or full_errors()


def job_error_within(err: BaseException) -> BaseException | None:
    """The first job error in `err`'s chain of causes (itself included), or None. Ray wraps what an actor
    raises (Ray Data's UserCodeException, an actor's error with `.cause`); this finds the error inside."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, JOB_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or getattr(err, "cause", None) or err.__context__
    return None


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
    """An error that ends a job with one line: a job error, or a ValueError the project raised itself (bad
    input or an invalid config value). A ValueError from inside a library is a bug: it keeps its trace."""
    return isinstance(err, JOB_ERRORS) or (isinstance(err, ValueError) and raised_by_project(err))


def error_line(err: BaseException) -> str:
    """What the user reads for a known error."""
    if isinstance(err, MissingMandatoryValue):
        return f"error: config value {err.full_key} is not set; give it on the command line: {err.full_key}=..."
    return f"error: {err}"


def exit_on_known_error(err: BaseException) -> None:
    """End the process with `error_line(err)` and status 1 if `err` is known; otherwise return (to re-raise)."""
    if is_known_error(err) and not full_errors():
        print(error_line(err), file=sys.stderr)
        sys.exit(1)


class FailureStreak:
    """Counts records that failed in a row at one stage; the `limit`-th raises TooManyFailures (0: never)."""

    def __init__(self, limit: int):
        if limit < 0:
            raise ValueError(f"runtime.max_consecutive_failures must be 0 (no limit) or more, got {limit}")
        self.limit = limit
        self.length = 0

    def failed(self, what: str) -> None:
        """One more failure in a row; `what` names it (record, place and reason) for the error."""
        self.length += 1
        if self.limit and self.length >= self.limit:
            raise TooManyFailures(
                f"{self.length} records in a row failed, the last {what}; that is a bug or a broken setup, "
                "not bad input: see skipped.jsonl, rerun with HYDRA_FULL_ERROR=1 for the traceback, "
                "or raise runtime.max_consecutive_failures"
            )

    def passed(self) -> None:
        """A record passed the stage: the failures before it were not in a row with those after it."""
        self.length = 0
