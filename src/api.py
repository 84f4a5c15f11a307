"""Build a pruner from the project's configs or from a model name, in a notebook or a job.

from src.api import GreedyPruner, load_pruner
pruner = load_pruner("pruner.objective=answer")          # any Hydra override
pruner = GreedyPruner.from_pretrained("embedded:smollm2", scorer=HybridScorer)
result = pruner.prune(question, reasoning, answer, keep_fractions=[0.7, 0.5])
print(result.show(0.5))
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from exact import GreedyPruner as ExactPruner
from exact import PackedScorer
from exact.pruner import ScorerFactory
from exact.sequence import plain_ids
from src.data import EMBEDDED, BadInput, load_records, select
from src.models import load_model
from src.scale.shards import take_shard

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger(__name__)


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


def pruner_class(node: DictConfig) -> type:
    """The class a pruner config's `_target_` names."""
    return get_class(node._target_)


def build(spec, **given):
    """`hydra.utils.instantiate(spec, **given)`, raising the constructor's own error (a ValueError that names
    the setting, a missing file) instead of Hydra's wrapper; a wrong argument keeps Hydra's message, which
    names the target."""
    try:
        return instantiate(spec, **given)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, Exception) and not isinstance(cause, TypeError):
            raise cause from None
        raise


def reading_text(factory: ScorerFactory, tokenizer) -> ScorerFactory:
    """`factory`, given the pruner's `tokenizer` when its scorer takes one (the hybrid's token classes)."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if "tokenizer" in inspect.signature(target).parameters:
        return functools.partial(factory, tokenizer=tokenizer)
    return factory


class GreedyPruner(ExactPruner):
    """exact.GreedyPruner, plus `from_pretrained`: a pruner LM this project can load, with any scorer."""

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        objective: str = "joint",
        scorer: ScorerFactory = PackedScorer,
        *,
        dtype: str = "auto",
        device: str = "auto",
        per_step: int = 1,
        system_prompt: str | None = None,
        answer_delimiter: str = "\n",
        max_reasoning_tokens: int | None = None,
        **options: Any,
    ) -> GreedyPruner:
        """A pruner over `model`: a hub id, a local folder, or `embedded:smollm2` (fp32 on CPU, bf16 on GPU).

        `scorer` is a scorer class (PackedScorer, NaiveScorer, surrogate.hybrid.HybridScorer) and
        `options` its settings, e.g. `token_budget=2048`, or for the hybrid `policy={"epsilon": 0.05}`.
        """
        lm, tokenizer = load_model(model, dtype, device)
        factory = reading_text(functools.partial(scorer, **options), tokenizer)
        return cls(lm, tokenizer, factory, objective, per_step, system_prompt, answer_delimiter, max_reasoning_tokens)


def with_scorer(cfg: DictConfig, scorer: DictConfig) -> DictConfig:
    """A copy of `cfg` whose scorer is `scorer` (a conf/scorer node): the pruner's `${scorer}` then reads it."""
    copy = cfg.copy()
    copy.scorer = scorer
    return copy


def build_pruner(cfg: DictConfig, model=None, tokenizer=None, node: DictConfig | None = None, **given):
    """The pruner `cfg.pruner` (or `node`) instantiates, over the pruner LM `cfg.model` (loaded unless given).

    A pruner that reads the chain with the LM (`uses_model`) gets the model and tokenizer, loaded with
    the attention implementation it needs (H2O: eager; the hybrid switches to eager for its base passes
    only). What each prune() call takes (`prune:`) is not part of building it. `given` replaces config
    keys with ready objects (e.g. `scorer=`).
    """
    node = cfg.pruner if node is None else node
    spec = OmegaConf.to_container(node, resolve=True)  # interpolations (${scorer}, ${data.*}) read the job's config
    spec.pop("prune", None)
    target = pruner_class(node)
    if not target.uses_model:
        return build(spec, **given)
    if model is None:
        attention = target.attention or cfg.model.attn_implementation
        model, tokenizer = load_model(**{**cfg.model, "attn_implementation": attention})
    if isinstance(spec.get("scorer"), dict) and "scorer" not in given:
        given["scorer"] = reading_text(build(spec.pop("scorer")), tokenizer)
    return build(spec, model=model, tokenizer=tokenizer, **given)


def prune_options(cfg: DictConfig) -> dict:
    """What each prune() call of the job takes: `pruner.prune` (keep fractions, prune_to_end, ...)."""
    options = OmegaConf.to_container(cfg.pruner.prune, resolve=True)
    options["keep_fractions"] = [float(f) for f in options["keep_fractions"]]
    return options


def load_pruner(*overrides: str) -> ExactPruner:
    """A ready pruner: the default config (embedded SmolLM2, packed scorer, Joint) plus `overrides`."""
    return build_pruner(compose_config(*overrides))


def reasoning_length(pruner, record: dict) -> int:
    """Reasoning length in the pruner's tokens (for TokenSkip: its classifier's tokens)."""
    return len(plain_ids(pruner.tokenizer, record["reasoning"]))


def read_data(cfg: DictConfig, pruner) -> Iterator[dict | BadInput]:
    """The records `cfg.data` selects: its length window and limit applied, bad input passed through.

    With `runtime.num_shards` > 1, only shard `runtime.shard` of that selection (by record id, after the
    limit: the shards of `data.limit=N` together hold the same N records as an unsharded run).
    """
    data = cfg.data
    items = load_records(data.path, data.format, data.split, data.answer_template, data.id_prefix, data.name)
    selected = select(items, lambda record: reasoning_length(pruner, record), data.reasoning_tokens, data.limit)
    return take_shard(selected, cfg.runtime.get("shard", 0), cfg.runtime.get("num_shards", 1))


def select_chains(pruner: ExactPruner, cfg: DictConfig) -> list[dict]:
    """The records `cfg.data` selects (GSM8K-length chains), or the embedded set when the file is absent."""
    if cfg.data.path not in EMBEDDED and not Path(cfg.data.path).exists() and cfg.bench.fallback_to_demo:
        log.warning("%s not found; benchmarking the embedded demo set (shorter chains) instead", cfg.data.path)
        cfg = cfg.copy()
        cfg.data.path, cfg.data.format, cfg.data.reasoning_tokens = "demo", "gsm8k", None
    chosen = [{**r, "n": reasoning_length(pruner, r)} for r in read_data(cfg, pruner) if not isinstance(r, BadInput)]
    if not chosen:
        raise ValueError(f"no record in {cfg.data.path} has {cfg.data.reasoning_tokens} reasoning tokens")
    return chosen
