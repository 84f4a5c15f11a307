"""`+experiment=eval_surrogate`: ranking quality of surrogates on held-out labelled records, as JSON.

`evaluate.surrogates` names each surrogate to report side by side (`default`, a trained file, or
`first_order` for the free f(q) ranking); all are scored on the same held-out steps. `evaluate.labels`
names the label sets to report apart (for example short and long chains): set name → label files.
`evaluate.carried` names surrogates to report again with exact scores remembered across steps
(`surrogate.metrics.carried_residual`): `NAME+carried` adds every candidate's exact residual of the
step before (an oracle), and `NAME+remembered@k` (`evaluate.remember_k`) replays a hybrid that
remembers only the k it verifies (at a record's first step every candidate, or its top
`evaluate.remember_first_k`: then `NAME+remembered@k,first@K`; with `evaluate.remember_refresh` R, also
the kept tokens R places each side of the last deletion: `,refresh@R`). With `evaluate.remember_lookahead`
W, a surrogate with a horizon is replayed again with its lookahead prior remembered and rerun only
within W places of the last deletion (`scorer.lookahead_refresh`): `,lookahead@W`, which also reports
`lookahead_per_step`, the candidates whose lookahead a step reruns; with `evaluate.remember_epsilons`
as well, the adaptive hybrid with memory is replayed at each ε E (`remembered@epsE`, with the margin its
surrogate was calibrated for under that policy).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from src.api import setup_runtime
from src.surrogate_data import feature_pruner, groups_of, labelled_records, predict
from src.tracking import start_tracking
from surrogate.calibration import margin_for
from surrogate.features import prior_column
from surrogate.groups import Group
from surrogate.metrics import argmax_verified, carried_residual, ranking_metrics, remembered_lookahead
from surrogate.models import Surrogate
from surrogate.store import FIRST_ORDER, load_surrogate, surrogate_path


def evaluated(name: str, cfg: DictConfig) -> tuple[Surrogate, dict]:
    """The surrogate `name` names, and what to say about it."""
    surrogate, meta = load_surrogate(name, cfg.model.path)
    where = name if name.startswith(FIRST_ORDER) else str(surrogate_path(name, cfg.model.path))
    return surrogate, {"surrogate": where, "kind": meta.get("kind")}


def with_memory(
    cfg: DictConfig,
    groups: list[Group],
    predictions: list[torch.Tensor],
    oracle: bool = True,
    adaptive: dict[float, tuple[float, int]] | None = None,
) -> list[tuple[str, dict]]:
    """The oracle (`carried`, unless `oracle` is false) and, with `evaluate.remember_k`, the replay of a remembering
    hybrid (`remembered@k`, with `,first@K` and `,refresh@R` when set); for each ε of `adaptive` (ε → margin,
    round size), also the replay of the adaptive one (`remembered@epsE`). A replay row adds `verified_per_step`
    and `argmax_verified`: how often the step's exact best is among what the hybrid would verify (the
    refreshed tokens included)."""
    first_k, refresh = cfg.evaluate.get("remember_first_k"), cfg.evaluate.get("remember_refresh") or 0
    policy = ("" if first_k is None else f",first@{first_k}") + (f",refresh@{refresh}" if refresh else "")
    first = "every candidate" if first_k is None else f"the top {first_k}"
    rows = [("carried", "every candidate's exact residual of the step before (an oracle)", None, None)]
    rows = rows if oracle else []
    if k := cfg.evaluate.get("remember_k"):
        about = f"the exact residuals of the top {k} verified at each step, {first} at the first (a replay)"
        if refresh:
            about += f", and of the kept tokens {refresh} each side of the last deletion"
        rows.append((f"remembered@{k}" + policy, about, k, None))
    for epsilon, replay in (adaptive or {}).items():
        about = f"verified down prediction plus memory to miss rate {epsilon} (margin {replay[0]:.3g} spreads), "
        rows.append((f"remembered@eps{epsilon:g}" + policy, about + f"{first} at the first (a replay)", None, replay))
    out = []
    for suffix, memory, k, replay in rows:
        margin, round_size, spread = replay or (None, 2, None)
        replayed = carried_residual(groups, predictions, k, first_k, refresh, margin, round_size, spread=spread)
        ranked, verified = replayed.estimates, replayed.verified
        row = {"memory": memory, **ranking_metrics(groups, ranked)}
        if suffix != "carried":
            row["verified_per_step"] = sum(len(chosen) for chosen in verified) / max(len(verified), 1)
            row["argmax_verified"] = argmax_verified(groups, verified)
        out.append((suffix, row))
    return out


def remembered_margins(cfg: DictConfig, surrogate: Surrogate, window: int) -> dict[float, tuple[float, int, list]]:
    """ε → (margin, round size, spread by memory age) of adaptive verification with memory, for each ε of
    `evaluate.remember_epsilons`, calibrated for the replay's policy; none for a surrogate calibrated for no
    memory (first_order@h)."""
    if "memory" not in (surrogate.calibration or {}):
        return {}
    policy = {"first_k": cfg.evaluate.remember_first_k, "refresh": cfg.evaluate.remember_refresh}
    policy["lookahead_refresh"] = window
    memory = surrogate.calibration["memory"]
    return {
        e: (margin_for(surrogate.calibration, e, policy), memory["round_size"], memory["spread"])
        for e in cfg.evaluate.remember_epsilons
    }


def evaluate_set(cfg: DictConfig, labels: list[str], pruner) -> dict:
    """Every surrogate of `evaluate.surrogates` on the steps of one label set."""
    records, rows = labelled_records(cfg, labels), {}
    carried = set(cfg.evaluate.get("carried") or ())
    unknown = carried - set(cfg.evaluate.surrogates)
    if unknown:
        raise ValueError(f"evaluate.carried names {sorted(unknown)}, which are not in evaluate.surrogates")
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
        if name in carried:
            rows |= {f"{name}+{suffix}": {**about, **row} for suffix, row in with_memory(cfg, groups, predictions)}
        window = cfg.evaluate.get("remember_lookahead")
        if name in carried and window is not None and surrogate.config["horizon"]:
            first_order = groups_of(cfg, records, surrogate.feature_set, 0, pruner)
            column = prior_column(surrogate.feature_set, surrogate.config["n_features"])
            replayed, reran = remembered_lookahead(groups, first_order, window, column)
            about_lookahead = {**about, "lookahead_per_step": sum(reran) / max(len(reran), 1)}
            adaptive = remembered_margins(cfg, surrogate, window)
            for suffix, row in with_memory(cfg, replayed, predict(surrogate, replayed), False, adaptive):
                rows[f"{name}+{suffix},lookahead@{window}"] = {**about_lookahead, **row}
    steps = sum(len(record["step_scores"]) for record in records)
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
