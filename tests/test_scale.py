"""Scale-out: shards by record id, the merge job and its checks, Slurm-style shards through Hydra's submitit
launcher (its local executor), and data-parallel pruning on a local Ray cluster; both give the records a
single process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_run import prune_config, records_file, row

from src.api import compose_config, read_data
from src.data import BadInput
from src.run import run_task
from src.scale.shards import shard_of, take_shard
from src.tasks.merge import MergeError

ROOT = Path(__file__).resolve().parents[1]
# Cost fields that depend on the machine or on what the pruner ran before: the packed scorer reuses the
# prompt's KV from the previous record when the prompt is the same, so tokens_processed depends on the order.
HISTORY = ("wall_s", "tokens_processed")
ROWS = [
    row("a"),
    b'{"id": "broken", ',
    row("b", reasoning=""),
    row("c", reasoning="x" * 40),
    row("a"),
    row("d", reasoning="3 - 1 = 2."),
    row("e", reasoning="1 + 1 = 2."),
]


def comparable(path: Path) -> dict[str, dict]:
    """The records of a records.jsonl by id, without the cost fields that depend on timing or order."""
    records = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        record["cost"] = {k: v for k, v in record["cost"].items() if k not in HISTORY}
        records[record["id"]] = record
    return records


def skipped(path: Path) -> list[tuple[str, str]]:
    return sorted((e["where"], e["reason"]) for e in map(json.loads, path.read_text().splitlines()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """A single-process prune run of ROWS: (input file, run directory)."""
    tmp = tmp_path_factory.mktemp("reference")
    data, out = records_file(tmp, ROWS), tmp / "single"
    summary = run_task(prune_config(tiny_model_dir, data, out, *SETTINGS))
    assert summary["pruned"] == 3 and summary["skipped"] == 4
    return data, out


SETTINGS = ("data.max_reasoning_tokens=30", "runtime.num_threads=1")


# ── shards ──────────────────────────────────────────────────────────────────────────────────────────────


def test_shard_of_is_stable_disjoint_and_covering():
    ids = [f"gsm8k-{i}" for i in range(400)]
    assert [shard_of(i, 8) for i in ("a", "b", "gsm8k-0")] == [3, 5, 4]  # sha256: the same in every process
    for n in (1, 3, 8):
        parts = [{r["id"] for r in take_shard(({"id": i} for i in ids), s, n)} for s in range(n)]
        assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
        assert min(map(len, parts)) > len(ids) / n / 2  # roughly balanced
    with pytest.raises(ValueError, match="runtime.shard must be in 0…1"):
        take_shard([], 2, 2)
    with pytest.raises(ValueError, match="runtime.num_shards must be at least 1"):
        take_shard([], 0, 0)


def test_shards_split_the_limited_selection(tmp_path):
    data = records_file(tmp_path, [row(f"r{i}") for i in range(6)] + [b"not json"] + [row("r6")])

    def ids(*overrides):
        cfg = compose_config("+experiment=prune", "data=jsonl", f"data.path={data}", "output_dir=/tmp/x", *overrides)
        return [item.where if isinstance(item, BadInput) else item["id"] for item in read_data(cfg, None)]

    whole = ids("data.limit=5")
    assert whole == ["r0", "r1", "r2", "r3", "r4"]  # the limit is reached before the bad line
    parts = [ids("data.limit=5", "runtime.num_shards=3", f"runtime.shard={s}") for s in range(3)]
    assert sorted(sum(parts, [])) == whole  # the same records as unsharded, each in one shard
    everything = [ids("runtime.num_shards=2", f"runtime.shard={s}") for s in range(2)]
    assert sum("input.jsonl:7" in str(i) for part in everything for i in part) == 1  # bad input: one shard


# ── merge ───────────────────────────────────────────────────────────────────────────────────────────────


def fake_shard(folder: Path, lines: list[bytes | dict], skipped_entries: list[dict] = (), finished: bool = True):
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_bytes(
        b"".join((json.dumps(x).encode() if isinstance(x, dict) else x) + b"\n" for x in lines)
    )
    (folder / "skipped.jsonl").write_text("".join(json.dumps(e) + "\n" for e in skipped_entries))
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


def merge(tmp_path: Path, inputs: str, *overrides: str) -> dict:
    cfg = compose_config("+experiment=merge", f"merge.inputs={inputs}", f"output_dir={tmp_path / 'merged'}", *overrides)
    return run_task(cfg)


def test_merge_combines_and_counts_per_shard(tmp_path):
    fake_shard(tmp_path / "run" / "shard_0", [{"id": "a"}, {"id": "c"}], [{"where": "x.jsonl:3", "reason": "bad"}])
    fake_shard(tmp_path / "run" / "shard_1", [{"id": "b"}])
    summary = merge(tmp_path, str(tmp_path / "run"), "merge.expected=none")
    assert summary["records"] == 3 and summary["skipped"] == 1
    assert [(s["records"], s["skipped"]) for s in summary["shards"]] == [(2, 1), (1, 0)]
    merged = tmp_path / "merged"
    assert [json.loads(x)["id"] for x in (merged / "records.jsonl").read_text().splitlines()] == ["a", "c", "b"]
    assert json.loads((merged / "summary.json").read_text())["records"] == 3


def test_merge_names_duplicates_corrupt_lines_and_unfinished_shards(tmp_path):
    one = fake_shard(tmp_path / "one", [{"id": "a"}, {"id": "b"}])
    two = fake_shard(tmp_path / "two", [{"id": "c"}, b'{"id": "torn', {"id": "a"}])
    (one / "skipped.jsonl").write_text('{"where": "x.jsonl:1", "reason": "bad"}\n[1]\n')
    with pytest.raises(MergeError) as err:
        merge(tmp_path, f"[{one},{two}]", "merge.expected=none")
    message = str(err.value)
    assert f"duplicate id 'a': in {one}/records.jsonl:1 and {two}/records.jsonl:3" in message
    assert f"{two}/records.jsonl:2: corrupt line (not valid JSON" in message  # read by src/data.py read_jsonl
    assert f"{one}/skipped.jsonl:2: corrupt line (expected a JSON object, got list)" in message
    assert not (tmp_path / "merged" / "records.jsonl").exists()

    fake_shard(tmp_path / "three", [{"id": "d"}], finished=False)
    with pytest.raises(MergeError, match="three has no summary.json"):
        merge(tmp_path, str(tmp_path / "t*"), "merge.expected=none")


def test_merge_checks_the_selected_ids_are_covered(tmp_path):
    data = records_file(tmp_path, [row("a"), row("b"), row("c")])
    fake_shard(
        tmp_path / "s0", [{"id": "a"}], [{"id": "c", "where": "record 'c'", "reason": "reasoning has 40 tokens"}]
    )
    overrides = ("merge.expected=data", "data=jsonl", f"data.path={data}")
    with pytest.raises(MergeError, match=r"1 selected record ids are missing: 'b'"):
        merge(tmp_path, str(tmp_path / "s0"), *overrides)
    fake_shard(tmp_path / "s1", [{"id": "b"}, {"id": "z"}])
    with pytest.raises(MergeError, match=r"record 'z' \(.*s1/records.jsonl:2\) is not in the selected input"):
        merge(tmp_path, str(tmp_path / "s*"), *overrides)


# ── Slurm-style shards through Hydra's submitit launcher (local executor) ──────────────────────────────


@pytest.fixture
def submitit_launcher():
    pytest.importorskip("submitit")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_submitit_shards_merge_to_the_single_process_records(submitit_launcher, tmp_path, tiny_model_dir, reference):
    data, single = reference
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "src.run", "-m", "+experiment=prune", "hydra/launcher=slurm_local",
        "runtime.num_shards=2", "runtime.shard=range(2)", f"hydra.sweep.dir={sweep}",
        "model=hf", f"model.path={tiny_model_dir}", "data=jsonl", f"data.path={data}", "logger=none",
        "runtime.progress=false", "pruner.prune.keep_fractions=[0.5]", *SETTINGS,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in sweep.glob("shard_*")) == ["shard_0", "shard_1"]

    with pytest.raises(MergeError, match=r"shards \[1\] of 2 are not among the inputs"):
        merge(tmp_path, str(sweep / "shard_0"))
    summary = merge(tmp_path, str(sweep))  # merge.expected=auto: the shards' saved configs give the selection
    assert (
        summary["expected"] == 4 and summary["records"] == 3
    )  # c: selected, skipped by the pruner and len(summary["shards"]) == 2
    merged = tmp_path / "merged"
    assert comparable(merged / "records.jsonl") == comparable(single / "records.jsonl")
    assert skipped(merged / "skipped.jsonl") == skipped(single / "skipped.jsonl")


# ── Ray ─────────────────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from src.scale.ray_prune import worker_env

    ray.init(num_cpus=2, include_dashboard=False, runtime_env=worker_env(), log_to_driver=False)
    yield ray
    ray.shutdown()


def test_worker_resources():
    from omegaconf import OmegaConf

    from src.scale.ray_prune import worker_resources

    runtime = OmegaConf.create({"cpus_per_worker": 2, "gpus_per_worker": "auto"})
    assert worker_resources(runtime, 0) == {"num_cpus": 2.0, "num_gpus": 0.0}
    assert worker_resources(runtime, 8)["num_gpus"] == 1.0
    runtime.gpus_per_worker = 0.5
    assert worker_resources(runtime, 8)["num_gpus"] == 0.5


class Stop(Exception):
    """Raised from `on_state` to end pruning at a chosen round, as a kill would."""


def save_partial_state(cfg, item: dict, rounds: int) -> None:
    """Leave the partial state a run killed after `rounds` scoring rounds of `item` leaves in partial/."""
    from src.api import build_pruner
    from src.checkpoint import PartialStates, fingerprint

    save, states = PartialStates(cfg.output_dir).saver(item["id"], fingerprint(item, cfg)), []

    def on_state(state) -> None:
        save(state)
        states.append(state)
        if len(states) == rounds:
            raise Stop

    with pytest.raises(Stop):
        build_pruner(cfg).prune(item["question"], item["reasoning"], item["answer"], [0.5], on_state=on_state)


def test_ray_workers_give_the_single_process_records_and_resume(ray_cluster, tmp_path, tiny_model_dir, reference):
    data, single = reference
    out = tmp_path / "ray"
    out.mkdir()
    cfg = prune_config(tiny_model_dir, data, out, "runtime=ray", "runtime.workers=2", *SETTINGS)
    # A killed run: one record finished, a torn line, and record d stopped after two deletions.
    first = (single / "records.jsonl").read_text().splitlines()[0]
    (out / "records.jsonl").write_text(first + "\n" + '{"id": "d", "meth')
    save_partial_state(cfg, ROWS[5], rounds=2)

    summary = run_task(cfg)
    assert (summary["pruned"], summary["already_done"], summary["continued"], summary["skipped"]) == (2, 1, 1, 4)
    assert summary["workers"] == 2 and not list((out / "partial").iterdir())
    assert comparable(out / "records.jsonl") == comparable(single / "records.jsonl")
    assert skipped(out / "skipped.jsonl") == skipped(single / "skipped.jsonl")
    assert json.loads((out / "summary.json").read_text())["pruned"] == 2


def test_a_ray_worker_reports_a_records_failure_and_raises_a_job_error(tmp_path, tiny_model_dir, monkeypatch):
    from omegaconf import OmegaConf
    from test_bad_input import failing_on

    from src.scale.ray_prune import PruneWorker

    cfg = prune_config(tiny_model_dir, tmp_path / "unused.jsonl", tmp_path / "run", "runtime=ray", *SETTINGS)
    worker = PruneWorker(OmegaConf.to_container(cfg, resolve=True))
    failing_on(monkeypatch, {"b": RuntimeError("boom"), "c": OSError(28, "No space left on device")})
    batch = {"item": [json.dumps(row(rid)) for rid in "ab"], "where": ["in.jsonl:1", "in.jsonl:2"]}
    out = worker(batch)
    assert out["id"] == ["a", "b"] and json.loads(out["record"][0])["id"] == "a" and out["record"][1] == ""
    assert out["skip"] == ["", "pruning failed: RuntimeError: boom"] and out["failed"] == ["", "pruning"]
    with pytest.raises(OSError, match="No space left"):
        worker({"item": [json.dumps(row("c"))], "where": ["in.jsonl:3"]})


def test_hybrid_prune_labels_on_ray_workers(ray_cluster, tmp_path, tiny_model_dir):
    """hybrid_prune's labelling stage is a prune job: with runtime=ray it runs on the workers."""
    from tests.test_hybrid_prune import hybrid_prune

    result = hybrid_prune(tmp_path, tiny_model_dir, "runtime=ray", "runtime.workers=2", "hybrid_prune.stop_after=label")
    labelled = json.loads((tmp_path / "run" / "label" / "summary.json").read_text())
    assert labelled["workers"] == 2 and labelled["pruned"] == len(result["plan"]["label"]) == 5
    assert json.loads((tmp_path / "run" / "heldout" / "summary.json").read_text())["pruned"] == 1
