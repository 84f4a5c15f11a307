"""The records a job selects, read without loading the pruner's model.

`read_data` measures reasoning length with the pruner's tokenizer, and only when `data.reasoning_tokens`
sets a window. A Ray driver or a merge job has no pruner: `TokenizerOnly` stands in for one and loads
just the tokenizer, the first time a length is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

from omegaconf import DictConfig

from src.api import pruner_class, read_data
from src.data import BadInput
from src.models import resolve_model_path


def tokenizer_path(cfg: DictConfig) -> str:
    """Where the tokenizer that measures reasoning length lives: the pruner LM's, or (TokenSkip) its classifier's."""
    if not pruner_class(cfg.pruner).uses_model:
        return str(cfg.pruner.classifier)
    return resolve_model_path(str(cfg.model.path), cfg.model.get("cache_dir"))


class TokenizerOnly:
    """Has the `tokenizer` of the pruner `cfg` describes, loaded lazily; enough for `read_data`."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path(self.cfg))
        return self._tokenizer


def selected_items(cfg: DictConfig) -> Iterator[dict | BadInput]:
    """`read_data(cfg, …)` without a pruner: the same records, bad input and shard."""
    return read_data(cfg, TokenizerOnly(cfg))
