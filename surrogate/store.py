"""Where surrogates live: the shipped default for the embedded model, or any saved file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from surrogate.models import Surrogate

DEFAULT = "default"
_SHIPPED = {"embedded:smollm2": "smollm2-mlp.pt"}


def surrogate_path(path: str, pruner_model: str) -> Path:
    """The file for `path`; `default` is the shipped surrogate of `pruner_model`."""
    if path != DEFAULT:
        return Path(path)
    if pruner_model not in _SHIPPED:
        raise ValueError(f"no shipped surrogate for {pruner_model!r}; train one with +experiment=train_surrogate")
    return Path(str(resources.files("surrogate") / "default" / _SHIPPED[pruner_model]))


def load_surrogate(path: str, pruner_model: str) -> tuple[Surrogate, dict]:
    """(surrogate, meta), refusing a surrogate trained on another pruner model's attention."""
    file = surrogate_path(path, pruner_model)
    if not file.exists():
        raise FileNotFoundError(f"surrogate checkpoint {file} does not exist")
    surrogate, meta = Surrogate.load(file)
    if meta.get("pruner") != pruner_model:
        raise ValueError(
            f"surrogate {file} was trained on the attention of {meta.get('pruner')!r}, not of {pruner_model!r}"
        )
    return surrogate, meta
