"""`+experiment=eval_surrogate`: ranking quality of surrogates on held-out labelled records, as JSON.

`evaluate.surrogates` names each surrogate to report side by side (`default`, a trained file, or
`first_order` for the free f(q) ranking); all are scored on the same held-out steps. `evaluate.labels`
names the label sets to report apart (for example short and long chains): set name → label files.
For the surrogates `evaluate.replay` names, each hybrid policy of `evaluate.policies` is replayed along
the exact paths (`surrogate.replay`: the live scorer's step function, the labels as its verification),
with the margins the surrogate's calibration gives it: `NAME+eps=0.02` and so on, with the candidates it
verifies a step and how often the exact best is among them, held out from the calibration's steps.
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.api import setup_runtime
from src.surrogate_data import feature_pruner, groups_of, labelled_records, predict
from src.tracking import start_tracking
from surrogate.calibration import in_force
from surrogate.features import prior_column
from surrogate.groups import Group, labelled_steps
from surrogate.metrics import ranking_metrics
from surrogate.models import Surrogate
from surrogate.replay import remembered_lookahead, replay, step_agreement
from surrogate.store import FIRST_ORDER, in_use, load_surrogate, surrogate_path


def evaluated(name: str, cfg: DictConfig) -> tuple[Surrogate, dict]:
    """The surrogate `name` names, and what to say about it."""
    name = in_use(name, cfg.model.path)  # `default`: the shipped surrogate, or the model-free prior
    surrogate, meta = load_surrogate(name, cfg.model.path)
    where = name if name.startswith(FIRST_ORDER) else str(surrogate_path(name, cfg.model.path))
    return surrogate, {"surrogate": where, "kind": meta.get("kind")}


def replayed(cfg: DictConfig, surrogate: Surrogate, groups: list[Group], records: list[dict], pruner) -> dict:
    """Each policy of `evaluate.policies` (fields changed from scorer=hybrid's), replayed along the exact paths with the
    margins the surrogate's calibration gives it: candidates verified a step, step agreement, and (with a
    lookahead prior) candidates whose lookahead a step reruns. Keyed by the policy's label."""
    rows, seen = {}, {}
    for change in cfg.evaluate.policies:
        asked = instantiate(OmegaConf.merge(cfg.evaluate.hybrid.policy, change))
        policy, margins = in_force(surrogate.calibration, asked, surrogate.config["horizon"])
        window = policy.lookahead_window if surrogate.config["horizon"] else None
        if window not in seen:
            seen[window] = (groups, None)
            if window is not None:
                first_order = groups_of(cfg, records, surrogate.feature_set, 0, pruner)
                column = prior_column(surrogate.feature_set, surrogate.config["n_features"])
                seen[window] = remembered_lookahead(groups, first_order, window, column)
        steps, reran = seen[window]
        verified = replay(steps, predict(surrogate, steps), policy, margins).verified
        rows[policy.label()] = {
            "verified_per_step": round(sum(len(v) for v in verified) / max(len(verified), 1), 3),
            "step_agreement": round(step_agreement(steps, verified), 4),
            "margin_z": None if margins is None else margins.z,
            **({"lookahead_per_step": round(sum(reran) / max(len(reran), 1), 3)} if reran else {}),
        }
    return rows


def evaluate_set(cfg: DictConfig, labels: list[str], pruner) -> dict:
    """Every surrogate of `evaluate.surrogates` on the steps of one label set."""
    records, rows = labelled_records(cfg, labels), {}
    unknown = set(cfg.evaluate.replay) - set(cfg.evaluate.surrogates)
    if unknown:
        raise ValueError(f"evaluate.replay names {sorted(unknown)}, which are not in evaluate.surrogates")
    for name, path in cfg.evaluate.surrogates.items():
        surrogate, about = evaluated(path, cfg)
        groups = groups_of(cfg, records, surrogate.feature_set, surrogate.config["horizon"], pruner)
        about |= {
            "feature_set": surrogate.feature_set,
            "residual": surrogate.config["residual"],
            "horizon": surrogate.config["horizon"],
        }
        predictions = predict(surrogate, groups)
        rows[name] = {**about, **ranking_metrics(groups, predictions)}
        if name in cfg.evaluate.replay:
            for label, row in replayed(cfg, surrogate, groups, records, pruner).items():
                rows[f"{name}+{label}"] = {**about, **row}
    steps = sum(len(labelled_steps(record)) for record in records)
    return {"labels": labels, "records": len(records), "steps": steps, "surrogates": rows}


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pruner = feature_pruner(cfg)
    sets = {name: evaluate_set(cfg, [str(p) for p in labels], pruner) for name, labels in cfg.evaluate.labels.items()}
    report = {
        "headline": "pearson: the mean per-step Pearson; pooled_pearson pools each record's steps first",
        "sets": sets,
    }
    text = json.dumps(report, indent=2)
    (out / "eval_surrogate.json").write_text(text)
    tracker = start_tracking(cfg, out, "eval_surrogate")
    tracker.summary(
        {
            f"eval/{label_set}/{name}/{k}": v
            for label_set, result in sets.items()
            for name, row in result["surrogates"].items()
            for k, v in row.items()
            if isinstance(v, (int, float))
        }
    )
    tracker.finish()
    print(text)
    return report
