"""`+experiment=train_surrogate`: fit a surrogate on exact labels with Lightning; save it with its metrics."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig

from src.api import build_pruner, load_eager_model, setup_runtime
from surrogate.groups import build_groups, read_labeled
from surrogate.metrics import ranking_metrics
from surrogate.models import Surrogate
from surrogate.training import GroupDataModule, SurrogateModule, split_by_record


def feature_pruner(cfg: DictConfig):
    """A pruner whose model runs eager attention, so that attention features can be read."""
    return build_pruner(cfg, *load_eager_model(cfg))


def lightning_logger(cfg: DictConfig, out: Path):
    if cfg.logger.name != "wandb":
        return False
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project=cfg.logger.project, mode=cfg.logger.mode, save_dir=str(out), job_type="train_surrogate")


def predict(surrogate: Surrogate, groups) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [surrogate(g.features) for g in groups]


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    spec, out = cfg.surrogate, Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = read_labeled(spec.labels)
    groups = build_groups(records, feature_pruner(cfg), spec.feature_cache, spec.feature_set, cfg.runtime.progress)
    train, val = split_by_record(groups, spec.val_fraction, cfg.runtime.seed)
    if not val:
        raise ValueError(f"{spec.labels} has labels for one record only; validation needs at least two")

    surrogate = Surrogate(train[0].features.shape[1], spec.kind, spec.hidden, spec.feature_set)
    surrogate.fit_normalizer(torch.cat([g.features for g in train]))
    module = SurrogateModule(surrogate, spec.lr, spec.weight_decay, spec.max_steps)
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val_pearson", mode="max", save_top_k=1)
    trainer = L.Trainer(
        max_steps=spec.max_steps,
        val_check_interval=spec.val_every_steps,
        check_val_every_n_epoch=None,
        callbacks=[checkpoint, EarlyStopping(monitor="val_pearson", mode="max", patience=spec.patience)],
        logger=lightning_logger(cfg, out),
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

    surrogate.eval()
    report = {
        "pruner": cfg.model.path,
        "kind": spec.kind,
        "feature_set": spec.feature_set,
        "labels": str(spec.labels),
        "records": {"train": len({g.record_id for g in train}), "val": len({g.record_id for g in val})},
        "train": ranking_metrics(train, predict(surrogate, train)),
        "val": ranking_metrics(val, predict(surrogate, val)),
        "best_val_pearson": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "trained": datetime.date.today().isoformat(),
    }
    surrogate.save(spec.output, meta=report)
    text = json.dumps(report, indent=2)
    (out / "train_surrogate.json").write_text(text)
    print(text)
    print(f"Surrogate saved to {spec.output}")
    return report
