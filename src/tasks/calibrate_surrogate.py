"""`+experiment=calibrate_surrogate`: new calibration evidence for a trained surrogate, without retraining it."""

from __future__ import annotations

import datetime
import json

from omegaconf import DictConfig

from src.api import setup_runtime
from src.surrogate_data import calibration_evidence, calibration_report, feature_pruner, groups_of, labelled_records
from surrogate.store import load_surrogate
from surrogate.training import held_out


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    spec = cfg.surrogate
    surrogate, meta = load_surrogate(spec.path, cfg.model.path)
    records, pruner = labelled_records(cfg, list(spec.labels)), feature_pruner(cfg)
    held = held_out((r["id"] for r in records), spec.val_fraction, cfg.runtime.seed)  # the training run's split
    if meta.get("records", {}).get("val", len(held)) != len(held):
        raise ValueError(
            f"these labels hold out {len(held)} records, but {spec.path} was validated on {meta['records']['val']}; "
            "recalibrate with the labels, val_fraction and seed it was trained with"
        )
    val = groups_of(
        cfg, [r for r in records if r["id"] in held], surrogate.feature_set, surrogate.config["horizon"], pruner
    )
    surrogate.calibration = calibration_evidence(cfg, surrogate, val, records, pruner)
    meta = {**meta, "calibration": calibration_report(cfg, surrogate), "calibrated": datetime.date.today().isoformat()}
    surrogate.save(spec.output, meta=meta)
    print(json.dumps(meta["calibration"], indent=2))
    print(f"Surrogate saved to {spec.output}")
    return meta
