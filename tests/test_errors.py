"""Known errors end a job with one line on stderr and no traceback; HYDRA_FULL_ERROR=1 shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue
from test_run import prune_overrides

from src.errors import error_line, is_known_error
from src.run import TASKS
from surrogate.features import feature_blocks

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*overrides: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")  # no "Loading weights" bar on stderr
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    command = [sys.executable, "-m", "src.run", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_missing_data_file_is_one_line_without_a_traceback(tmp_path, tiny_model_dir):
    missing = tmp_path / "no-such-file.jsonl"
    done = run_cli(*prune_overrides(tiny_model_dir, missing, f"hydra.run.dir={tmp_path / 'run'}"))
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no-such-file.jsonl" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_hydra_full_error_shows_the_traceback(tmp_path):
    overrides = ["task=fly", f"hydra.run.dir={tmp_path}"]  # an invalid config value, found before any model loads
    plain, full = run_cli(*overrides), run_cli(*overrides, full_error=True)
    assert plain.returncode == full.returncode == 1
    assert plain.stderr.strip().splitlines() == ["error: unknown task 'fly'; expected one of " + str(sorted(TASKS))]
    assert "Traceback (most recent call last)" in full.stderr and "ValueError: unknown task 'fly'" in full.stderr


def raised(action) -> Exception:
    try:
        action()
    except Exception as err:
        return err
    raise AssertionError("no exception")


def test_known_errors_are_the_projects_own_and_missing_things():
    assert is_known_error(raised(lambda: feature_blocks("bogus")))  # a ValueError raised by the project
    assert not is_known_error(raised(lambda: json.loads("{")))  # a ValueError from inside a library: a bug
    assert not is_known_error(raised(lambda: [][1]))
    assert is_known_error(raised(lambda: open("/no/such/file")))
    missing = raised(lambda: OmegaConf.create({"data": {"path": "???"}}).data.path)
    assert isinstance(missing, MissingMandatoryValue) and is_known_error(missing)
    assert error_line(missing) == "error: config value data.path is not set; give it on the command line: data.path=..."
