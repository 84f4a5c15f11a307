"""Where surrogates live: the shipped default for the embedded model, or any saved file.

`default` is the shipped surrogate of the pruner model; for any other model it is the model-free lookahead
prior `MODEL_FREE`, which needs no training (a log line says so).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from surrogate.features import feature_width
from surrogate.models import Surrogate

DEFAULT = "default"
FIRST_ORDER = "first_order"  # no file: rank by f(q), or f_h(q) as first_order@h; uncalibrated
# (+experiment=train_surrogate surrogate=first_order [surrogate.horizon=h] makes a calibrated one)
MODEL_FREE = "first_order@4"  # `default` for a model with no shipped surrogate
_SHIPPED = {"embedded:smollm2": "smollm2-residual.pt"}
log = logging.getLogger(__name__)


def in_use(path: str, pruner_model: str) -> str:
    """What `path` loads for `pruner_model`: `default` is its shipped surrogate, or `MODEL_FREE` (said in a log line)
    for a model with none."""
    if path != DEFAULT or pruner_model in _SHIPPED:
        return path
    log.warning(
        "no learned surrogate for %s: the hybrid ranks candidates by the model-free lookahead prior f_4(q) (%s) "
        "and verifies a fixed number a step; +experiment=hybrid_prune trains one for this model",
        pruner_model,
        MODEL_FREE,
    )
    return MODEL_FREE


def surrogate_path(path: str, pruner_model: str) -> Path:
    """The file for a surrogate name `in_use` gave: `default` is the shipped surrogate of `pruner_model`."""
    if path != DEFAULT:
        return Path(path)
    return Path(str(resources.files("surrogate") / "default" / _SHIPPED[pruner_model]))


def load_surrogate(path: str, pruner_model: str, model=None) -> tuple[Surrogate, dict]:
    """(surrogate, meta) of a file, `default` (`in_use`) or `first_order[@h]`; refuses one made for another model.

    With `model`, also refuses one whose feature set does not give the input width it was trained on
    for this model's layers and heads (a checkpoint of another architecture or feature definition).
    """
    path = in_use(path, pruner_model)
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
            f"surrogate {file} was trained for the pruner model {meta.get('pruner')!r}, not {pruner_model!r}: "
            f"train one for this model with +experiment=hybrid_prune, or use scorer.surrogate=default"
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
