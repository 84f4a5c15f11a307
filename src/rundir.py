"""One live job per run directory: an advisory lock on `<run dir>/.lock`, held while the job runs.

Two jobs writing one run directory (a double launch, a Slurm requeue while the first still runs) would
prune every record twice. The second is refused instead, before it touches the run's files: a single
run of `python -m src.run` takes the lock as Hydra starts it (`LockRunDir`, before Hydra writes its
.hydra/ files and log), and `run_task` takes it for a job started in-process or by a multirun launcher
(the Slurm one), where Hydra has already saved .hydra/ for the job by then.

The lock is `flock`, which the kernel drops when the holding process ends, however it ends, so a killed
job leaves no stale lock: the lock file stays, and the next job on the directory takes it and resumes.
On NFS, Linux implements `flock` with NFS byte-range locks, which every client sees; Lustre gives them
only when mounted with `-o flock`. Where the file system has no locks, the job warns and runs without
one (docs/SCALING.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.errors import RunDirInUse, exit_on_known_error

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)  # the file system cannot lock
_held: dict[str, int | None] = {}  # run directory (real path) -> the lock file's descriptor (None: unlocked);
# per process: two threads of one process running jobs on one directory are not kept apart


def holder(lock_file: Path) -> str:
    """Who holds the lock, as its holder wrote it: `pid P on HOST since TIME`."""
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire(folder: Path) -> int | None:
    """Lock `folder` for this process: the lock file's descriptor, or None where locks are not supported.

    Raises RunDirInUse when a live job holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / LOCK_NAME
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise RunDirInUse(
                f"{folder} is in use by another job ({holder(lock_file)}); wait for it to end, "
                "or give this job another hydra.run.dir"
            ) from None
        if err.errno in NO_LOCKS:
            log.warning("%s: the file system cannot lock (%s); nothing keeps a second job out of it", folder, err)
            return None
        raise
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode(), 0)
    except BaseException:  # a full disk: let go of the lock with the descriptor
        os.close(fd)
        raise
    return fd


def hold(folder: str | Path) -> bool:
    """Take `folder`'s lock for this process unless it holds it already; whether it took it now."""
    key = os.path.realpath(folder)
    if key in _held:
        return False
    _held[key] = acquire(Path(folder))
    return True


def release(folder: Path) -> None:
    """Let go of `folder`'s lock, if this process holds it."""
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


@contextmanager
def run_dir_lock(folder: str | Path) -> Iterator[None]:
    """Hold `folder`'s lock for the `with` block; a no-op where this process holds it already."""
    took = hold(folder)
    try:
        yield
    finally:
        if took:
            release(Path(folder))


@contextmanager
def holding_run_dir(cfg: DictConfig) -> Iterator[None]:
    """Hold the lock on the job's `output_dir` (none when the config gives no output directory)."""
    folder = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if folder is None:
        yield
        return
    with run_dir_lock(folder):
        yield


class LockRunDir(Callback):
    """A Hydra callback (conf/config.yaml) that locks `hydra.run.dir` before Hydra writes into it; the lock
    lasts as long as the process. A refusal ends the job with one line and status 1. A run directory that
    cannot be resolved yet (it reads `${hydra:...}`) is locked later, by `run_task`."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = OmegaConf.select(config, "hydra.run.dir", throw_on_resolution_failure=False)
        if folder is None:
            return
        try:
            hold(folder)
        except Exception as err:
            exit_on_known_error(err)
            raise
