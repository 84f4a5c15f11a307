"""The surrogate's data from a job's config: labelled records joined with their text, their feature
groups (by the model the job names), and a surrogate's predictions on them. Used by the train,
eval and bench tasks."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from src.api import build_pruner
from src.data import load_records
from src.labels import read_labels
from src.models import load_model
from src.paths import cache_root
from surrogate.features import token_class_table
from surrogate.groups import Group, build_groups
from surrogate.models import Surrogate


def feature_pruner(cfg: DictConfig):
    """A pruner whose model runs eager attention, so that attention features can be read."""
    return build_pruner(cfg, *load_model(**{**cfg.model, "attn_implementation": "eager"}))


def predict(surrogate: Surrogate, groups: list[Group]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [surrogate(g.features, g.prior) for g in groups]


def labelled_records(cfg: DictConfig, labels) -> list[dict]:
    """The labelled records of `labels` (records.jsonl or packed files); packed ones get their text from
    `surrogate.label_sources`, read as `cfg.data` reads them."""
    data = cfg.data

    def dataset():
        for path in cfg.surrogate.label_sources:
            yield from load_records(path, data.format, data.split, data.answer_template, data.id_prefix, data.name)

    return read_labels(labels, dataset)


def groups_of(cfg: DictConfig, records: list[dict], feature_set: str, horizon: int = 0, pruner=None) -> list[Group]:
    """The groups of every labelled step: `feature_set` features and f_horizon priors by the model in `cfg`
    (or `pruner`'s)."""
    pruner = pruner or feature_pruner(cfg)
    classes = token_class_table(pruner.tokenizer)
    cache, progress = cfg.surrogate.feature_cache or cache_root() / "features", cfg.runtime.progress
    return build_groups(records, pruner, cache, feature_set, classes, progress, horizon)
