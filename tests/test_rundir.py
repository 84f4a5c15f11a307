"""One live job per run directory: a second job is refused before it touches anything, and a lock left by
a killed job does not block the resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_errors import run_cli
from test_run import prune_config, prune_overrides, read_ids, records_file, row

from src.errors import RunDirInUse
from src.run import run_task
from src.rundir import LOCK_NAME, run_dir_lock

ROOT = Path(__file__).resolve().parents[1]


HOLDER = """
import sys
from src.rundir import run_dir_lock
with run_dir_lock(sys.argv[1]):
    print("held", flush=True)
    input()
"""


def hold(folder: Path) -> subprocess.Popen:
    """Another process that takes `folder`'s lock and keeps it until killed."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, **pipes)
    assert holder.stdout.readline() == "held\n"
    return holder


@pytest.fixture
def run_dir(tmp_path, tiny_model_dir):
    """A run directory with one finished record and a skip report, the data file, and the directory's files."""
    data, out = records_file(tmp_path, [row("a"), b"{torn", row("b")]), tmp_path / "run"
    run_task(prune_config(tiny_model_dir, data, out, "data.limit=1"))
    (out / "skipped.jsonl").write_text("left by the first job\n")
    return data, out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_job_is_refused_and_touches_nothing(run_dir, tiny_model_dir):
    data, out = run_dir
    holder = hold(out)
    try:
        before = snapshot(out)
        with pytest.raises(RunDirInUse, match=rf"{out} is in use by another job \(pid {holder.pid} on .+ since .+\)"):
            run_task(prune_config(tiny_model_dir, data, out))
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_job_does_not_block_the_resume(run_dir, tiny_model_dir):
    data, out = run_dir
    holder = hold(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_NAME).exists()  # the file stays; the lock went with the process
    summary = run_task(prune_config(tiny_model_dir, data, out))
    assert (summary["pruned"], summary["already_done"]) == (1, 1) and read_ids(out / "records.jsonl") == ["a", "b"]


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with run_dir_lock(tmp_path), run_dir_lock(tmp_path / "." / ""):
        pass
    with run_dir_lock(tmp_path):  # released: it can be taken again
        pass


def test_the_command_line_refuses_a_second_job_before_hydra_writes(run_dir, tiny_model_dir):
    data, out = run_dir
    holder = hold(out)
    try:
        before = snapshot(out)
        began = time.monotonic()
        done = run_cli(*prune_overrides(tiny_model_dir, data, f"hydra.run.dir={out}"))
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {out} is in use by another job (pid {holder.pid} on ")
        assert snapshot(out) == before  # not even Hydra's .hydra/ files or log
        assert time.monotonic() - began < 120
    finally:
        holder.kill()
        holder.wait()


def test_an_output_directory_that_cannot_be_made_ends_the_job_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_cli("+experiment=prune", "logger=none", f"hydra.run.dir={blocker / 'run'}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: [Errno 20] Not a directory") and "Traceback" not in done.stderr
    )


def test_a_file_system_without_locks_warns_and_runs_unlocked(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with run_dir_lock(tmp_path), run_dir_lock(tmp_path):
        assert "the file system cannot lock" in caplog.text
