"""`+experiment=eval_surrogate`: ranking quality of a surrogate on held-out labelled records, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from src.api import setup_runtime
from src.tasks.train_surrogate import feature_pruner, predict
from src.tracking import start_tracking
from surrogate.groups import build_groups, read_labeled
from surrogate.metrics import ranking_metrics
from surrogate.store import load_surrogate, surrogate_path


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    surrogate, meta = load_surrogate(cfg.evaluate.surrogate, cfg.model.path)
    pruner = feature_pruner(cfg)
    feature_set = surrogate.config["feature_set"]
    records = read_labeled(cfg.evaluate.labels)
    groups = build_groups(records, pruner, cfg.surrogate.feature_cache, feature_set, cfg.runtime.progress)
    report = {
        "surrogate": str(surrogate_path(cfg.evaluate.surrogate, cfg.model.path)),
        "kind": meta.get("kind"),
        "feature_set": feature_set,
        "labels": str(cfg.evaluate.labels),
        "records": len({g.record_id for g in groups}),
        **ranking_metrics(groups, predict(surrogate, groups)),
    }
    text = json.dumps(report, indent=2)
    (out / "eval_surrogate.json").write_text(text)
    tracker = start_tracking(cfg, out, "eval_surrogate")
    tracker.summary({f"eval/{k}": v for k, v in report.items() if isinstance(v, (int, float))})
    tracker.finish()
    print(text)
    return report
