"""Where greedy-prune keeps what it caches between runs: one root, one folder per kind of cache.

smollm2-135m-instruct/  the embedded model, converted from GGUF once (src/models.py)
features/               the surrogate's training features (surrogate/groups.py)
annotations/            the LLM annotator's answers (src/analysis/llm_annotator.py)
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/greedy-prune`, or `~/.cache/greedy-prune` when XDG_CACHE_HOME is unset or empty."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "greedy-prune"


# Configs name it `${cache_root:}` (conf/paths/default.yaml), so code and config agree on one rule.
OmegaConf.register_new_resolver("cache_root", lambda: str(cache_root()), replace=True)
