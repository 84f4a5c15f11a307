"""The surrogate's data from a job's config: labelled records joined with their text, their feature
groups (by the model the job names), a surrogate's predictions on them, and its calibration evidence.
Used by the train, calibrate, eval and bench tasks."""

from __future__ import annotations

from dataclasses import replace

import torch
from omegaconf import DictConfig

from src.api import build_pruner
from src.data import BadInput, load_records
from src.labels import read_labels
from src.models import load_model
from src.paths import cache_root
from surrogate.calibration import dial, evidence
from surrogate.features import prior_column, token_class_table
from surrogate.groups import Group, build_groups
from surrogate.models import Surrogate
from surrogate.policy import HybridPolicy
from surrogate.replay import remembered_lookahead


def feature_pruner(cfg: DictConfig):
    """A pruner whose model runs eager attention, so that attention features can be read."""
    return build_pruner(cfg, *load_model(**{**cfg.model, "attn_implementation": "eager"}))


def predict(surrogate: Surrogate, groups: list[Group]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [surrogate(g.features, g.prior) for g in groups]


def labelled_records(cfg: DictConfig, labels) -> list[dict]:
    """The labelled records of `labels` (records.jsonl or packed files). Packed ones get their text from
    `surrogate.label_sources` (conf/data nodes, each read as its own config reads it), and the prompt their
    source encodes them with (`prompt`); records.jsonl rows are encoded with the job's `data` prompt."""

    def dataset():
        for source in cfg.surrogate.label_sources.values():
            prompt = {"system_prompt": source.system_prompt, "answer_delimiter": source.answer_delimiter}
            rows = load_records(
                source.path, source.format, source.split, source.answer_template, source.id_prefix, source.name
            )
            yield from (row if isinstance(row, BadInput) else {**row, "prompt": prompt} for row in rows)

    return read_labels(labels, dataset)


def groups_of(cfg: DictConfig, records: list[dict], feature_set: str, horizon: int = 0, pruner=None) -> list[Group]:
    """The groups of every labelled step: `feature_set` features and f_horizon priors by the model in `cfg`
    (or `pruner`'s)."""
    pruner = pruner or feature_pruner(cfg)
    classes = token_class_table(pruner.tokenizer)
    cache, progress = cfg.surrogate.feature_cache or cache_root() / "features", cfg.runtime.progress
    return build_groups(records, pruner, cache, feature_set, classes, progress, horizon)


def calibration_evidence(cfg: DictConfig, surrogate: Surrogate, val: list[Group], records: list[dict], pruner) -> dict:
    """What the surrogate stores to calibrate any policy when loaded (`calibration.evidence`): its predictions on the
    validation steps, with a lookahead prior as a hybrid with `surrogate.lookahead_window` remembers it."""
    window = cfg.surrogate.lookahead_window if surrogate.config["horizon"] else None
    seen = val
    if window is not None:
        held = {g.record_id for g in val}
        first_order = groups_of(cfg, [r for r in records if r["id"] in held], surrogate.feature_set, 0, pruner)
        column = prior_column(surrogate.feature_set, surrogate.config["n_features"])
        seen, _ = remembered_lookahead(val, first_order, window, column)
    return evidence(seen, predict(surrogate, seen), window)


def calibration_report(cfg: DictConfig, surrogate: Surrogate) -> dict:
    """The default policy (`scorer=hybrid`) at each of `surrogate.report_epsilons`, simulated on the evidence."""
    policy = replace(HybridPolicy(), lookahead_window=surrogate.calibration["lookahead_window"])
    return dial(surrogate.calibration, policy, cfg.surrogate.report_epsilons)
