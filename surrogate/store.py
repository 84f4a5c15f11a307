"""Where surrogates live: the shipped default for the embedded model, or any saved file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from surrogate.features import feature_width
from surrogate.models import Surrogate

DEFAULT = "default"
FIRST_ORDER = "first_order"  # no file: rank by f(q), or f_h(q) as first_order@h; uncalibrated
# (+experiment=train_surrogate surrogate=first_order [surrogate.horizon=h] makes a calibrated one)
_SHIPPED = {"embedded:smollm2": "smollm2-residual.pt"}


def surrogate_path(path: str, pruner_model: str) -> Path:
    """The file for `path`; `default` is the shipped surrogate of `pruner_model`."""
    if path != DEFAULT:
        return Path(path)
    if pruner_model not in _SHIPPED:
        raise ValueError(f"no shipped surrogate for {pruner_model!r}; train one with +experiment=train_surrogate")
    return Path(str(resources.files("surrogate") / "default" / _SHIPPED[pruner_model]))


def load_surrogate(path: str, pruner_model: str, model=None) -> tuple[Surrogate, dict]:
    """(surrogate, meta) of a file, `default` (shipped) or `first_order[@h]`; refuses one made for another pruner model.

    With `model`, also refuses one whose feature set does not give the input width it was trained on
    for this model's layers and heads (a checkpoint of another architecture or feature definition).
    """
    name, _, horizon = path.partition("@")
    if name == FIRST_ORDER:
        if horizon and not horizon.isdigit():
            raise ValueError(f"bad surrogate {path!r}: write first_order or first_order@H with H tokens of lookahead")
        surrogate = Surrogate(0, "first_order", horizon=int(horizon or 0))
        return surrogate, {"pruner": pruner_model, "kind": "first_order"}
    file = surrogate_path(path, pruner_model)
    if not file.exists():
        raise FileNotFoundError(f"surrogate checkpoint {file} does not exist")
    try:
        surrogate, meta = Surrogate.load(file)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"surrogate checkpoint {file} cannot be read by this version: {err}") from err
    if meta.get("pruner") != pruner_model:
        raise ValueError(
            f"surrogate {file} was trained on the attention of {meta.get('pruner')!r}, not of {pruner_model!r}"
        )
    if model is not None:
        config = model.config
        width = feature_width(surrogate.feature_set, config.num_hidden_layers, config.num_attention_heads)
        if width != surrogate.config["n_features"]:
            raise ValueError(
                f"surrogate {file} takes {surrogate.config['n_features']} features, but its feature set "
                f"{surrogate.feature_set!r} gives {width} for this model; retrain it with +experiment=train_surrogate"
            )
    return surrogate, meta
