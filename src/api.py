"""Build a pruner from the project's configs, in a notebook or a job.

from src.api import load_pruner
pruner = load_pruner("pruner.objective=answer")          # any Hydra override
result = pruner.prune(question, reasoning, answer, keep_fractions=[0.7, 0.5])
print(result.show(0.5))
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from exact import GreedyPruner, Scorer, make_scorer
from src.baselines import BASELINES, build_baseline
from src.data import BadInput, load_records, select
from src.models import load_model
from src.scale.shards import take_shard

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def setup_runtime(cfg: DictConfig) -> None:
    """Threads and seeds from `cfg.runtime`."""
    if cfg.runtime.get("num_threads"):
        torch.set_num_threads(int(cfg.runtime.num_threads))
    random.seed(cfg.runtime.seed)
    torch.manual_seed(cfg.runtime.seed)


def compose_config(*overrides: str) -> DictConfig:
    """The job config for `overrides` (e.g. "+experiment=demo", "model=hf", "model.path=..."), as Hydra composes it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def scorer_options(cfg: DictConfig) -> dict:
    """The scorer group's budgets, as keyword arguments."""
    return {k: v for k, v in cfg.scorer.items() if k != "name"}


def build_scorer(cfg: DictConfig, model, tokenizer=None) -> Scorer:
    """The scorer `cfg` asks for; `pruner=hybrid` puts its surrogate's shortlist in front of the packed scorer."""
    options = scorer_options(cfg)
    if cfg.pruner.name != "hybrid":
        return make_scorer(cfg.scorer.name, model, cfg.pruner.objective, **options)
    from surrogate.hybrid import HybridScorer
    from surrogate.store import load_surrogate

    surrogate, _ = load_surrogate(cfg.pruner.surrogate, cfg.model.path, model)
    k = 1 if cfg.pruner.surrogate_only else cfg.pruner.k
    epsilon = None if cfg.pruner.surrogate_only else cfg.pruner.epsilon
    return HybridScorer(
        model, surrogate, cfg.pruner.objective, k, epsilon, cfg.pruner.k_max, tokenizer=tokenizer, **options
    )


def load_eager_model(cfg: DictConfig):
    """(model, tokenizer) of `cfg.model` with eager attention, whose weights the surrogate's features read."""
    return load_model(**{**cfg.model, "attn_implementation": "eager"})


def build_pruner(cfg: DictConfig, model=None, tokenizer=None, scorer: Scorer | None = None):
    """The pruner `cfg.pruner` names (greedy, hybrid or a baseline); loads `cfg.model` unless one is given.

    `pruner=h2o` loads the model with eager attention (it reads attention weights); the hybrid switches
    to eager for its base passes only.
    """
    if cfg.pruner.name in BASELINES:
        return build_baseline(cfg, model, tokenizer)
    if model is None:
        model, tokenizer = load_model(**cfg.model)
    return GreedyPruner(
        model,
        tokenizer,
        objective=cfg.pruner.objective,
        scorer=scorer or build_scorer(cfg, model, tokenizer),
        per_step=cfg.pruner.per_step,
        system_prompt=cfg.data.system_prompt,
        answer_delimiter=cfg.data.answer_delimiter,
        max_reasoning_tokens=cfg.data.max_reasoning_tokens,
        model_name=cfg.model.path,
    )


def load_pruner(*overrides: str) -> GreedyPruner:
    """A ready GreedyPruner: the default config (embedded SmolLM2, packed scorer, Joint) plus `overrides`."""
    return build_pruner(compose_config(*overrides))


def reasoning_length(pruner, record: dict) -> int:
    """Reasoning length in the pruner's tokens (for TokenSkip: its classifier's tokens)."""
    return len(pruner.tokenizer(record["reasoning"], add_special_tokens=False)["input_ids"])


def read_data(cfg: DictConfig, pruner) -> Iterator[dict | BadInput]:
    """The records `cfg.data` selects: its length window and limit applied, bad input passed through.

    With `runtime.num_shards` > 1, only shard `runtime.shard` of that selection (by record id, after the
    limit: the shards of `data.limit=N` together hold the same N records as an unsharded run).
    """
    data = cfg.data
    items = load_records(data.path, data.format, data.split, data.answer_template, data.id_prefix, data.name)
    selected = select(items, lambda record: reasoning_length(pruner, record), data.reasoning_tokens, data.limit)
    return take_shard(selected, cfg.runtime.get("shard", 0), cfg.runtime.get("num_shards", 1))
