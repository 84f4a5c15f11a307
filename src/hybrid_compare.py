"""Hybrid scorers against exact greedy on the same chains: cost, kept-set agreement, J and its retention, and step
agreement along the exact path. Used by `+experiment=bench_hybrid` and `+experiment=hybrid_prune`'s report.

A method is `scorer=hybrid` with some settings changed (`Methods`); the exact reference is either run here or read
from labelling runs (`against_labels`).
"""

from __future__ import annotations

import statistics

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from exact import GreedyPruner
from exact.keep import kept_indices, kept_jaccard, n_kept
from exact.record import PruneRecord
from src.api import build_pruner, with_scorer
from src.surrogate_data import groups_of
from surrogate.features import prior_column
from surrogate.groups import Group
from surrogate.hybrid import HybridScorer
from surrogate.replay import remembered_lookahead, replay, step_agreement


def prune_all(name: str, pruner, chains: list[dict], fractions: list[float], **options) -> list[PruneRecord]:
    """Prune every chain with `pruner`; the records."""
    return [
        pruner.prune(c["question"], c["reasoning"], c["answer"], fractions, id=c["id"], **options).record
        for c in tqdm(chains, desc=name, unit="rec")
    ]


def objective_at(record: PruneRecord, keep: float) -> float:
    """J after the deletions that reach `keep`."""
    return record.step_objective[record.n_reasoning_tokens - n_kept(record.n_reasoning_tokens, keep)]


def step_agreement_of(groups: list[Group], scorer: HybridScorer) -> float:
    """Fraction of exact-path steps whose exact best score is among the candidates `scorer` would verify there: its
    policy replayed with the exact scores as its verification (`surrogate.replay`), on the groups as it sees them."""
    with torch.inference_mode():
        predictions = [scorer.surrogate(g.features, g.prior).double() for g in groups]
    verified = replay(groups, predictions, scorer.policy, scorer.margins).verified
    return round(step_agreement(groups, verified), 4)


def cost_summary(records: list[PruneRecord], reference: list[PruneRecord]) -> dict:
    wall, tokens = sum(r.cost["wall_s"] for r in records), sum(r.cost["tokens_processed"] for r in records)
    steps = sum(len(r.deletion_order) for r in records)
    verified = [v for r in records for v in r.cost["verified_per_step"]]
    return {
        "wall_s": round(wall, 2),
        "tokens_processed": tokens,
        "tokens_per_step": round(tokens / max(steps, 1), 1),
        "tokens_per_s": round(tokens / wall, 1),  # below exact's: what the eager base pass and small passes cost
        "speedup_wall": round(speedup_wall := sum(r.cost["wall_s"] for r in reference) / wall, 3),
        "speedup_tokens": round(speedup_tokens := sum(r.cost["tokens_processed"] for r in reference) / tokens, 3),
        "wall_over_token_speedup": round(speedup_wall / speedup_tokens, 3),  # 1: time falls as fast as tokens
        "verified_per_step": round(statistics.mean(verified), 2) if verified else None,
    }


def agreement_summary(records: list[PruneRecord], reference: list[PruneRecord], fractions: list[float]) -> dict:
    """Mean kept-set Jaccard with exact at each keep fraction, final J, its gap to exact and the mean absolute gap
    (chains above and below exact do not cancel); and per record (`per_record`: id → Jaccard at the last keep
    and J gap), to see whether a mean is one chain gone astray."""
    last = min(fractions)
    pairs = list(zip(records, reference))
    jaccard = {
        f"{f:g}": [kept_jaccard(r.n_reasoning_tokens, r.deletion_order, e.deletion_order, f) for r, e in pairs]
        for f in fractions
    }
    gaps = [objective_at(r, last) - objective_at(e, last) for r, e in pairs]
    return {
        "jaccard": {f: round(statistics.mean(values), 4) for f, values in jaccard.items()},
        "final_objective": round(statistics.mean(objective_at(r, last) for r in records), 4),
        "final_objective_gap_nats": round(statistics.mean(gaps), 4),
        "final_objective_abs_gap_nats": round(statistics.mean(abs(gap) for gap in gaps), 4),
        "per_record": {
            r.id: {"jaccard": round(j, 4), "gap_nats": round(gap, 4)}
            for r, j, gap in zip(records, jaccard[f"{last:g}"], gaps)
        },
    }


def retention(results: dict, baselines: dict, keep: float) -> None:
    """Add each method's J retention at `keep`: the share of the J gap between Uniform and exact greedy that it
    keeps, (J_method − J_uniform) / (J_exact − J_uniform), from mean J over the chains (1: exact's J)."""
    if "uniform" not in baselines:
        return
    uniform, exact = baselines["uniform"]["objective"][f"{keep:g}"], results["exact_packed"]["final_objective"]
    for row in results.values():
        row["j_retention"] = (
            round((row["final_objective"] - uniform) / (exact - uniform), 4) if exact != uniform else None
        )


def method_name(scorer: HybridScorer, surrogate: str | None) -> str:
    """A hybrid's name in the report: its policy's label, after the surrogate its settings name, if any."""
    label = scorer.policy.label()
    return label if surrogate is None else f"{surrogate}:{label}"


class Methods:
    """The hybrid variants of `bench.methods` over one model: each is the scorer `bench.hybrid` with its settings,
    named by its policy."""

    def __init__(self, cfg: DictConfig, model, tokenizer):
        self.cfg = cfg
        self.specs, self.pruners = {}, {}
        for spec in cfg.bench.methods:
            scorer = OmegaConf.merge(cfg.bench.hybrid, spec)  # a key the hybrid scorer lacks fails here
            pruner = build_pruner(with_scorer(cfg, scorer), model, tokenizer)
            name = method_name(pruner.scorer, spec.get("surrogate"))
            if name in self.pruners:
                raise ValueError(f"bench.methods names the hybrid {name} twice")
            self.specs[name], self.pruners[name] = OmegaConf.to_container(spec), pruner

    def agreement(
        self, reference: list[PruneRecord], exact: GreedyPruner, names: list[str] | None = None
    ) -> dict[str, float]:
        """Step agreement of every method (or those `names`) along the exact path of `reference` (features cached
        on disk)."""
        records = [r.to_json() for r in reference]
        result, groups = {}, {}

        def steps(feature_set: str, horizon: int) -> list[Group]:
            if (feature_set, horizon) not in groups:
                groups[feature_set, horizon] = groups_of(self.cfg, records, feature_set, horizon, pruner=exact)
            return groups[feature_set, horizon]

        for name, pruner in self.pruners.items():
            if names is not None and name not in names:
                continue
            scorer = pruner.scorer
            feature_set, horizon = scorer.surrogate.feature_set, scorer.surrogate.config["horizon"]
            seen = steps(feature_set, horizon)
            window = scorer.policy.lookahead_window
            if horizon and window is not None:  # its prior, as it remembers it
                column = prior_column(feature_set, scorer.surrogate.config["n_features"])
                seen, _ = remembered_lookahead(seen, steps(feature_set, 0), window, column)
            result[name] = step_agreement_of(seen, scorer)
        return result


def baseline_objectives(cfg, nodes, model, tokenizer, exact: GreedyPruner, chains, reference, fractions) -> dict:
    """J of each static baseline's pruned chains (`nodes`: name → pruner node) at every keep fraction, and its gap
    to exact greedy's."""
    out = {}
    for name, node in nodes.items():
        records = prune_all(name, build_pruner(cfg, model, tokenizer, node), chains, fractions)  # H2O runs eager
        values = {f"{f:g}": [] for f in fractions}
        for chain, record in zip(chains, records):
            segments = exact.encode(chain["question"], chain["reasoning"], chain["answer"])
            for f in fractions:
                kept = torch.tensor(kept_indices(record.n_reasoning_tokens, record.deletion_order, f))
                scores = exact.scorer.objective(segments.with_kept(kept), len(segments.prompt), len(kept))
                values[f"{f:g}"].append(float(scores.values[0]))
        out[name] = {
            "objective": {f: round(statistics.mean(v), 4) for f, v in values.items()},
            "objective_gap_nats": {
                f"{f:g}": round(statistics.mean(v - objective_at(e, f) for v, e in zip(values[f"{f:g}"], reference)), 4)
                for f in fractions
            },
        }
    return out


def compare(
    methods: Methods,
    names: list[str],
    chains: list[dict],
    reference: list[PruneRecord],
    exact: GreedyPruner,
    fractions: list[float],
    suffix: str = "",
) -> dict[str, dict]:
    """Exact greedy's `reference` runs and the methods `names`, each pruning `chains`: cost, agreement with exact
    at every keep fraction and step agreement along its path, by method (progress bars: name + `suffix`)."""
    results = {
        "exact_packed": {**cost_summary(reference, reference), **agreement_summary(reference, reference, fractions)}
    }
    for name in names:
        records = prune_all(f"{name}{suffix}", methods.pruners[name], chains, fractions)
        results[name] = {**cost_summary(records, reference), **agreement_summary(records, reference, fractions)}
    for name, agreement in methods.agreement(reference, exact, names).items():
        results[name]["step_agreement"] = agreement
    results["exact_packed"]["step_agreement"] = 1.0
    return results


def label_record(row: dict) -> PruneRecord:
    """A labelled exact run (`src.labels.read_labels`: packed labels keep no tokens or pruned texts) as a record."""
    fields = {"reasoning_tokens": [], "step_perplexity": [], "pruned": {}, **row}
    return PruneRecord.from_json(fields)


def against_labels(
    cfg, methods: Methods, names: list[str], rows: list[dict], exact: GreedyPruner, model, tokenizer, fractions, uniform
) -> dict:
    """The methods `names` on labelled chains (`rows`: labelled records with their text) against their labelled
    exact runs (not rerun: exact's cost is the labelling runs'): the same summary as the short chains, with J
    retention against Uniform (`uniform`: its pruner node) on these chains."""
    chains = [{**row, "n": row["n_reasoning_tokens"]} for row in rows]
    reference = [label_record(row) for row in rows]
    results = compare(methods, names, chains, reference, exact, fractions, " (labelled)")
    baselines = baseline_objectives(cfg, {"uniform": uniform}, model, tokenizer, exact, chains, reference, fractions)
    retention(results, baselines, min(fractions))
    return {
        "records": [{"id": c["id"], "n_reasoning_tokens": c["n"]} for c in chains],
        "exact_cost_from": "the labelling runs",
        "methods": results,
        "baselines": baselines,
    }
