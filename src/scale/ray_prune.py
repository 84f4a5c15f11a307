"""`runtime=ray`: the prune job, data-parallel over a pool of Ray actors, each holding one pruner.

    python -m src.run +experiment=prune runtime=ray runtime.workers=8          # a local Ray cluster
    python -m src.run +experiment=prune runtime=ray runtime.address=auto ...   # join a running one

The driver reads the data, reports bad input and duplicate ids, and leaves out the records already in
records.jsonl; Ray Data sends each remaining record (one per block) to an actor pool (`map_batches`
with a callable class that builds the pruner once per actor). Every finished record comes back to the
driver, which appends it with the same `RecordWriter` as the single-process job (fsynced, resumable),
so a killed Ray run resumes like any other. Actors save the greedy state of the records they are on to
`partial/` in the run directory like the single-process job (src/checkpoint.py), so a rerun also
continues inside them; that needs the run directory on a file system the actors share (one machine,
or a cluster's shared storage). skipped.jsonl and summary.json are written as there too.

Records cross Ray as JSON strings: the input's carried-through fields differ from record to record,
which Arrow blocks could not hold as columns.

Actors need the project importable: the driver puts the repository root on their PYTHONPATH, which
suffices on one machine or on a cluster sharing the file system (else install the package on every node).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from src.api import build_pruner, setup_runtime
from src.checkpoint import PartialStates
from src.data import BadInput, Record
from src.errors import job_error_within
from src.outputs import RecordWriter, json_line
from src.pruning import SkipReport, at_record_boundary, new_counts, prune_item, record_metrics, records_to_prune
from src.scale.inputs import selected_items
from src.tracking import Tracker

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


class PruneWorker:
    """A Ray Data callable class: builds the pruner once, then prunes each batch of JSON-encoded records.

    Returns per record its id, either `record` (the record's JSON line) or `skip` (why the instance
    cannot be pruned; the other column is an empty string), the stage that `failed` with an exception
    (src/errors.py; empty for bad input or a pruned record), and whether it `continued` a saved state.
    """

    def __init__(self, config: dict[str, Any]):
        self.cfg = OmegaConf.create(config)
        setup_runtime(self.cfg)
        if not self.cfg.runtime.get("num_threads"):
            import torch

            torch.set_num_threads(max(1, int(self.cfg.runtime.cpus_per_worker)))
        self.pruner = build_pruner(self.cfg)
        self.partials = PartialStates(self.cfg.output_dir, self.cfg.runtime.checkpoint_every_s)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"id": [], "record": [], "skip": [], "failed": [], "continued": []}
        for text, where in zip(batch["item"], batch["where"]):
            item = Record(json.loads(text), where)
            outcome = at_record_boundary(item, lambda item=item: self.prune(item))
            skipped = isinstance(outcome, BadInput)
            out["id"].append(item["id"])
            out["record"].append("" if skipped else outcome[0])
            out["skip"].append(outcome.reason if skipped else "")
            out["failed"].append((outcome.failed or "") if skipped else "")
            out["continued"].append(not skipped and outcome[1])
        return out

    def prune(self, item: Record) -> tuple[str, bool]:
        """The finished record as a JSON line (encoded here: a record that cannot be written fails inside its
        boundary), and whether it continued a saved state."""
        result, continued = prune_item(self.pruner, item, self.cfg, self.partials)
        return json_line(result.record.to_json()).decode("utf-8"), continued


def require_ray() -> None:
    """Raise ImportError with the install command unless Ray Data is installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(f"runtime=ray needs Ray Data: pip install -e '.[scale]' ({err})") from err


def worker_resources(runtime: DictConfig, cluster_gpus: float) -> dict[str, float]:
    """`num_cpus` and `num_gpus` per actor; `gpus_per_worker: auto` is one GPU when the cluster has any."""
    gpus = runtime.gpus_per_worker
    if gpus == "auto":
        gpus = 1 if cluster_gpus > 0 else 0
    return {"num_cpus": float(runtime.cpus_per_worker), "num_gpus": float(gpus)}


def worker_env() -> dict[str, Any]:
    """The Ray runtime_env that makes this repository importable in every actor."""
    paths = [str(ROOT)] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


@contextmanager
def ray_cluster(runtime: DictConfig) -> Iterator[None]:
    """Connected to Ray: the running session if any, else `runtime.address` (null: start a local cluster).

    Shuts down only what it started.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=runtime.address, runtime_env=worker_env(), log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()


def prune_on_ray(todo: list[Record], cfg: DictConfig) -> Iterator[dict[str, Any]]:
    """Rows {id, record, skip, failed, continued} for the records in `todo`, in the order they finish.

    A record's failure comes back as a skip; an error that ends the job (src/errors.py) ends the run
    (records already written stay); an actor that dies (killed, out of memory) is restarted and its
    record retried, up to `runtime.max_restarts` times per actor.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = bool(cfg.runtime.progress)
    runtime = cfg.runtime
    resources = worker_resources(runtime, ray.cluster_resources().get("GPU", 0))
    log.info("pruning %d records on %d Ray workers, each with %s", len(todo), runtime.workers, resources)
    items = [{"item": json.dumps(item, ensure_ascii=False), "where": item.where} for item in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one record per block: per-record results
    results = dataset.map_batches(
        PruneWorker,
        fn_constructor_kwargs={"config": OmegaConf.to_container(cfg, resolve=True)},
        batch_size=runtime.batch_size,
        # a fixed pool; one task at a time per actor, so no record waits behind a long one on a busy actor
        compute=ActorPoolStrategy(size=runtime.workers, max_tasks_in_flight_per_actor=1),
        max_restarts=runtime.max_restarts,
        max_task_retries=runtime.max_restarts,
        **resources,
    )
    yield from results.iter_rows()


def prune_records_on_ray(
    cfg: DictConfig, writer: RecordWriter, partials: PartialStates, tracker: Tracker, out: Path
) -> dict[str, int]:
    """Prune every selected record not yet in `writer` on Ray; report and skip bad ones. Returns the counts."""
    require_ray()
    counts = new_counts()
    skip = SkipReport(out, counts, cfg.runtime.max_consecutive_failures)
    todo = list(records_to_prune(selected_items(cfg), writer.done, skip, counts, partials))
    if not todo:
        skip.finish()
        return counts
    where = {item["id"]: item.where for item in todo}
    with ray_cluster(cfg.runtime):
        rows = prune_on_ray(todo, cfg)
        try:
            for row in tqdm(rows, desc="records", unit="rec", total=len(todo), disable=not cfg.runtime.progress):
                if not row["record"]:
                    skip(BadInput(where[row["id"]], row["skip"], row["id"], failed=row["failed"] or None))
                    continue
                record = json.loads(row["record"])
                writer.write(record)
                skip.passed("pruning")
                partials.remove(record["id"])
                counts["pruned"] += 1
                counts["continued"] += bool(row["continued"])
                tracker.log(record_metrics(record))
        except Exception as err:  # an actor's job error arrives wrapped by Ray: end the job with the error itself
            inner = job_error_within(err)
            if inner is None or inner is err:
                raise
            raise inner from err
    skip.finish()
    return counts
