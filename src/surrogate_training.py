"""Train a surrogate from a job's config: Lightning fit on exact labels (1 − Pearson per step, `surrogate.loss`),
calibration evidence on the validation records, saved with its report. Used by `+experiment=train_surrogate` and
`+experiment=hybrid_prune`."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig

from src.surrogate_data import (
    calibration_evidence,
    calibration_report,
    feature_pruner,
    groups_of,
    labelled_records,
    predict,
)
from src.tracking import Tracker, start_tracking
from surrogate.groups import Group
from surrogate.metrics import ranking_metrics
from surrogate.models import Surrogate
from surrogate.training import GroupDataModule, SurrogateModule, split_by_record


def lightning_logger(tracker: Tracker):
    """Lightning's logger for the job's tracker: its W&B run, or none."""
    if tracker.run is None:
        return False
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(experiment=tracker.run)


def fit(
    cfg: DictConfig, surrogate: Surrogate, train: list[Group], val: list[Group], out: Path, tracker: Tracker
) -> float | None:
    """Train `surrogate` with Lightning (1 − Pearson per step, `surrogate.loss`); restore its best validation
    checkpoint and return its score."""
    spec = cfg.surrogate
    surrogate.fit_normalizer(torch.cat([g.features for g in train]))
    module = SurrogateModule(
        surrogate, spec.lr, spec.weight_decay, spec.max_steps, spec.loss.top1_weight, spec.loss.top1_temperature
    )
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val_pearson", mode="max", save_top_k=1)
    trainer = L.Trainer(
        max_steps=spec.max_steps,
        val_check_interval=spec.val_every_steps,
        check_val_every_n_epoch=None,
        callbacks=[checkpoint, EarlyStopping(monitor="val_pearson", mode="max", patience=spec.patience)],
        logger=lightning_logger(tracker),
        fast_dev_run=spec.fast_dev_run,
        accelerator="cpu",
        default_root_dir=str(out),
        enable_progress_bar=cfg.runtime.progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    trainer.fit(module, datamodule=GroupDataModule(train, val, spec.groups_per_batch, cfg.runtime.seed))
    if checkpoint.best_model_path:
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(best)
    return float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None


def train(cfg: DictConfig, labels: list[str], output: str | Path, out: Path) -> dict:
    """Train the surrogate `cfg.surrogate` on the labelled records of `labels`, calibrate it, save it to `output` with
    its report (also `out/train_surrogate.json`, and W&B); returns the report."""
    spec = cfg.surrogate
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    records, pruner = labelled_records(cfg, labels), feature_pruner(cfg)
    groups = groups_of(cfg, records, spec.feature_set, spec.horizon, pruner)
    features_s = time.perf_counter() - began
    train, val = split_by_record(groups, spec.val_fraction, cfg.runtime.seed)
    if not val:
        raise ValueError(f"{labels} has labels for one record only; validation needs at least two")

    width = train[0].features.shape[1]
    surrogate = Surrogate(width, spec.kind, spec.hidden, spec.feature_set, spec.residual, spec.horizon)
    tracker = start_tracking(cfg, out, "train_surrogate")
    best = fit(cfg, surrogate, train, val, out, tracker) if surrogate.net is not None else None
    surrogate.eval()
    surrogate.calibration = calibration_evidence(cfg, surrogate, val, records, pruner)
    report = {
        "pruner": cfg.model.path,
        "kind": spec.kind,
        "feature_set": surrogate.feature_set,
        "residual": surrogate.config["residual"],
        "horizon": surrogate.config["horizon"],
        "loss": dict(spec.loss),
        "labels": [str(path) for path in labels],
        "records": {"train": len({g.record_id for g in train}), "val": len({g.record_id for g in val})},
        "steps": {"train": len(train), "val": len(val)},
        "train": ranking_metrics(train, predict(surrogate, train)),
        "val": ranking_metrics(val, predict(surrogate, val)),
        "best_val_pearson": best,
        "calibration": calibration_report(cfg, surrogate),
        "wall_s": {"features": round(features_s, 1), "total": round(time.perf_counter() - began, 1)},
        "trained": datetime.date.today().isoformat(),
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    surrogate.save(output, meta=report)
    text = json.dumps(report, indent=2)
    (out / "train_surrogate.json").write_text(text)
    print(text)
    tracker.summary({key: value for key, value in report.items() if key in ("best_val_pearson", "steps")})
    tracker.finish()
    print(f"Surrogate saved to {output}")
    return report
