"""`+experiment=hybrid_prune`: bring your own model, from a model and a data set to pruned chains in one command.

Seven stages in the run directory, each reusing what an earlier run of the same directory finished:

1. estimate  the exact scorer's rate on this model, measured on the spot; tokens and hours of exact greedy on the
             whole data set against the hybrid's, from the cost model (estimate.json);
2. plan      a labelling subset spread over lengths (a count, or what a time budget buys at that rate) and a few
             held-out chains (plan.json; plan/label.jsonl, plan/heldout.jsonl, plan/rest.jsonl);
3. label     exact greedy with every step's scores on both (label/, heldout/: prune jobs, resumable; on Ray workers
             with runtime=ray);
4. train     a surrogate for this model on the labels, with Lightning (surrogate/surrogate.pt, train_surrogate.json);
5. compare   the learned hybrid and the model-free one (`first_order@4`) against exact greedy on the held-out chains:
             fewer tokens, Jaccard, J gap and retention, step agreement, and the surrogate's ranking there
             (compare.json, dial.png). It comes before the rest is pruned, so that its numbers say whether to;
6. prune     the rest of the data set with the hybrid (pruned/records.jsonl, resumable);
7. report    the comparison next to what labelling and pruning cost (report.json; it and dial.png to W&B).

`hybrid_prune.stop_after` ends the job after a stage; `hybrid_prune.surrogate` takes a surrogate you already have
instead of labelling and training one (the held-out chains are still labelled, for the report).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from src import prune_job
from src.analysis.dial import plot_dial
from src.api import build_pruner, read_data, setup_runtime, with_scorer
from src.data import BadInput, read_jsonl
from src.hybrid_compare import Methods, against_labels
from src.label_plan import Chain, length_summary, pick, scoring_rate
from src.models import load_model
from src.outputs import write_jsonl
from src.pruning import at_record_boundary
from src.surrogate_data import groups_of, labelled_records, predict
from src.surrogate_training import train
from src.tracking import publish, start_tracking
from surrogate.features import attention_modules, feature_blocks
from surrogate.metrics import ranking_metrics
from surrogate.store import MODEL_FREE, load_surrogate

log = logging.getLogger(__name__)
STAGES = ("estimate", "plan", "label", "train", "compare", "prune", "report")


class Stages:
    """The run directory: where each stage writes, and the job config each runs with."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self.spec, self.out = cfg, cfg.hybrid_prune, Path(cfg.output_dir)
        if self.spec.stop_after is not None and self.spec.stop_after not in STAGES:
            raise ValueError(f"hybrid_prune.stop_after={self.spec.stop_after!r}; expected one of {STAGES} or null")
        self.keep = float(self.spec.keep)

    def subset(self, name: str) -> Path:
        return self.out / "plan" / f"{name}.jsonl"

    def records(self, folder: str) -> Path:
        return self.out / folder / "records.jsonl"

    def surrogate(self) -> str:
        return str(self.spec.surrogate or self.out / "surrogate" / "surrogate.pt")

    def hybrid(self, surrogate: str) -> DictConfig:
        """The job's hybrid scorer (`scorer=hybrid`) with `surrogate`."""
        node = self.cfg.scorer.copy()
        node.surrogate = surrogate
        return node

    def data(self, subset: str) -> DictConfig:
        """The data node a subset comes from (its prompt): `hybrid_prune.heldout.data` over `data` for held-out chains
        from another data set, else `data`."""
        other = self.spec.heldout.data
        return OmegaConf.merge(self.cfg.data, other) if subset == "heldout" and other is not None else self.cfg.data

    def with_data(self, subset: str) -> DictConfig:
        """The job's config with the data node of `subset`."""
        cfg = self.cfg.copy()
        with open_dict(cfg):
            cfg.data = self.data(subset)
        return cfg

    def job(self, subset: str, folder: str, scorer: DictConfig, labels: bool) -> DictConfig:
        """The prune job of stage `folder` over the plan's `subset`, with its data set's prompt and `scorer`; with
        `labels`, every step's scores down to `keep`."""
        cfg = with_scorer(self.with_data(subset), scorer)
        with open_dict(cfg):
            cfg.output_dir = str(self.out / folder)
            cfg.data.path, cfg.data.format, cfg.data.id_prefix = str(self.subset(subset)), "records", None
            cfg.data.limit, cfg.data.reasoning_tokens = None, None
            if labels:
                cfg.pruner.prune.keep_fractions = [self.keep]
                cfg.pruner.prune.record_scores = True
        return cfg


def chains_of(pruner, items) -> tuple[list[Chain], dict[str, dict]]:
    """Each good record's segment lengths in the pruner's tokens, and the records by id, in data order. Bad input
    (and a record that cannot be encoded) is named in a warning and left out; a repeated id keeps its first record."""
    chains, records = [], {}
    for item in items:
        if not isinstance(item, BadInput):
            if item["id"] in records:
                item = BadInput(item.where, "duplicate id (the first is used)", item["id"])
            else:
                item = at_record_boundary(
                    item, lambda i=item: (i, pruner.encode(i["question"], i["reasoning"], i["answer"]))
                )
        if isinstance(item, BadInput):
            log.warning("skipped: %s", item)
            continue
        item, segments = item
        chains.append(Chain(item["id"], len(segments.prompt), len(segments.reasoning), len(segments.answer)))
        records[item["id"]] = dict(item)
    return chains, records


def settings(cfg: DictConfig, *keys: str) -> dict:
    """The settings a stage's result depends on: the model, the data set, and these keys of the job's config."""
    picked = {"model": cfg.model.path, "data": OmegaConf.to_container(cfg.data, resolve=True)}
    for key in keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        picked[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return picked


def saved(path: Path, make, given: dict, redo: bool = False) -> dict:
    """The stage result at `path` if it was made with the `given` settings, else `make()` written there with them.
    A result made with other settings is redone with `redo`, else refused: later stages were built on it."""
    if path.exists():
        found = json.loads(path.read_text())
        if found.get("settings") == given:
            return found
        if not redo:
            changed = sorted(
                k for k in {*given, *found.get("settings", {})} if given.get(k) != found["settings"].get(k)
            )
            raise ValueError(
                f"{path} was made with other settings ({', '.join(changed)} changed): rerun with the settings it was "
                f"made with, in another run directory (hydra.run.dir=…), or delete it to plan again (labels and "
                f"pruned records already made are kept and reused by id)"
            )
    value = {**make(), "settings": given}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return value


def estimate(stages: Stages, pruner, chains: list[Chain], records: dict[str, dict]) -> dict:
    """Stage 1: the exact scorer's rate on the spot, and what exact greedy and the hybrid would cost on every chain."""
    spec, keep = stages.spec.estimate, stages.keep
    if not chains:
        raise ValueError(f"{stages.cfg.data.path} has no usable record: nothing to estimate or prune")
    probe = min(chains, key=lambda c: abs(c.prompt + c.n + c.answer - spec.probe_tokens))
    row = records[probe.id]
    rate = scoring_rate(pruner.scorer, pruner.encode(row["question"], row["reasoning"], row["answer"]))
    horizon, verified = int(spec.horizon), int(spec.verified_per_step)
    exact = sum(c.tokens("packed", keep) for c in chains)
    hybrid = sum(c.tokens("hybrid", keep, horizon, verified) for c in chains)
    return {
        "model": stages.cfg.model.path,
        "data": stages.cfg.data.path,
        "scoring_tokens_per_s": round(rate, 1),
        "keep": keep,
        "lengths": length_summary(chains),
        "exact": {"tokens": round(exact), "hours": round(exact / rate / 3600, 2)},
        "hybrid": {
            "tokens": round(hybrid),
            "hours": round(hybrid / rate / 3600, 2),
            "assumes": f"{verified} verified a step, lookahead {horizon} (hybrid_prune.estimate; the compare stage "
            "measures it)",
        },
    }


def within(chains: list[Chain], window, exclude: set[str] = frozenset()) -> list[Chain]:
    return [c for c in chains if window[0] <= c.n <= window[1] and c.id not in exclude]


def plan(stages: Stages, chains: list[Chain], heldout_chains: list[Chain], found: dict) -> dict:
    """Stage 2: which chains to hold out, which to label (spread over lengths, up to a count, or up to the time
    budget at the measured rate: `label.budget_s`, at most `label.budget_share` of exact greedy on the whole data
    set), and the rest to prune. Errors say what to change when the data cannot give them."""
    spec, keep, seed = stages.spec, stages.keep, int(stages.cfg.runtime.seed)
    rate, exact_s = found["scoring_tokens_per_s"], found["exact"]["tokens"] / found["scoring_tokens_per_s"]
    pool = within(heldout_chains, spec.heldout.reasoning_tokens)
    if len(pool) < spec.heldout.chains:
        raise ValueError(
            f"hybrid_prune.heldout.chains={spec.heldout.chains} asks for more chains than the {len(pool)} of "
            f"{list(spec.heldout.reasoning_tokens)} reasoning tokens the data has: lower it or widen "
            f"hybrid_prune.heldout.reasoning_tokens"
        )
    heldout = pick(pool, spec.heldout.chains, bins=spec.heldout.chains, seed=seed)
    held = {c.id for c in heldout}
    label: list[Chain] = []
    if not spec.surrogate:
        pool = within(chains, spec.label.reasoning_tokens, held)
        count, budget = spec.label.chains, min(spec.label.budget_s, spec.label.budget_share * exact_s)
        if count is not None and len(pool) < count:
            raise ValueError(
                f"hybrid_prune.label.chains={count} asks for more chains than the {len(pool)} of "
                f"{list(spec.label.reasoning_tokens)} reasoning tokens the data has besides the held-out ones: lower "
                f"it or widen hybrid_prune.label.reasoning_tokens"
            )
        price = lambda c: c.tokens("packed", keep) / rate  # noqa: E731
        label = pick(pool, count, budget, price, spec.label.strata, seed)
        if len(label) < spec.label.min_chains:
            raise ValueError(
                f"labelling {len(label)} chains is too few to train a surrogate on (hybrid_prune.label.min_chains="
                f"{spec.label.min_chains}) with a budget of {budget:.0f} s (hybrid_prune.label.budget_s, at most "
                f"label.budget_share of the {exact_s:.0f} s exact greedy takes on the whole data set): raise them, or "
                f"set hybrid_prune.label.chains; a data set this small can also be pruned exactly (+experiment=prune)"
            )
    taken = held | {c.id for c in label}
    rest = [c for c in chains if c.id not in taken][: spec.prune.limit]
    return {
        "heldout": [c.id for c in heldout],
        "label": [c.id for c in label],
        "rest": [c.id for c in rest],
        "label_estimate_s": round(sum(c.tokens("packed", keep) for c in label) / rate),
        "lengths": {
            "heldout": length_summary(heldout),
            "label": length_summary(label),
            "rest": length_summary(rest),
        },
    }


def write_subsets(stages: Stages, chosen: dict, records: dict[str, dict]) -> None:
    """The plan's subsets as record files the prune jobs read (format `records`: the answer already templated)."""
    stages.subset("label").parent.mkdir(parents=True, exist_ok=True)
    for name in ("heldout", "label", "rest"):
        write_jsonl(stages.subset(name), [records[rid] for rid in chosen[name]])


def done(path: Path, ids: list[str]) -> bool:
    """Whether the records file at `path` holds every id of `ids`."""
    return set(ids) <= set(read_ids(path))


def label(stages: Stages, chosen: dict) -> None:
    """Stage 3: exact greedy with every step's scores on the held-out and the labelling chains (prune jobs)."""
    exact = stages.spec.exact
    for subset in ("heldout", "label"):
        if chosen[subset] and not done(stages.records(subset), chosen[subset]):
            print(f"\nLabelling {len(chosen[subset])} {subset} chains exactly → {stages.out / subset}")
            prune_job.run(stages.job(subset, subset, exact, labels=True))


def rows_of(path: Path) -> list[dict]:
    """The records of a stage's records file (none before it ran). A torn last line left by a killed run is passed
    over here; the stage's prune job drops it when it resumes (src/outputs.py)."""
    if not path.exists():
        return []
    return [row for _, row in read_jsonl(path) if not isinstance(row, BadInput)]


def read_ids(path: Path) -> list[str]:
    return [row["id"] for row in rows_of(path)]


def cost_of(path: Path) -> dict:
    """Records, wall seconds and tokens of a stage's records file."""
    rows = rows_of(path)
    return {
        "records": len(rows),
        "wall_s": round(sum(r["cost"]["wall_s"] for r in rows), 1),
        "tokens": sum(r["cost"]["tokens_processed"] for r in rows),
    }


def saving(stages: Stages, chains: list[Chain]) -> dict:
    """What pruning the rest with the hybrid cost, against exact greedy on the same chains (cost model, at the keep
    fractions' last)."""
    pruned = cost_of(stages.records("pruned"))
    done = set(read_ids(stages.records("pruned")))
    keep = min(float(f) for f in stages.cfg.pruner.prune.keep_fractions)
    exact = round(sum(c.tokens("packed", keep) for c in chains if c.id in done))
    fewer = round(exact / pruned["tokens"], 2) if pruned["tokens"] else None
    return {**pruned, "exact_tokens_from_cost_model": exact, "fewer_tokens": fewer}


def training(stages: Stages) -> dict | None:
    """Stage 4's report (train_surrogate.json), or None for a surrogate brought along."""
    path = stages.out / "surrogate" / "train_surrogate.json"
    return json.loads(path.read_text()) if path.exists() and not stages.spec.surrogate else None


def compare(stages: Stages, model, tokenizer) -> dict:
    """Stage 5: the learned and the model-free hybrid against exact greedy on the held-out chains, and the learned
    surrogate's ranking there."""
    cfg, fractions = stages.cfg, [float(f) for f in stages.cfg.pruner.prune.keep_fractions]
    fractions = sorted({*fractions, stages.keep}, reverse=True)
    surrogates = {"learned": stages.surrogate(), "model_free": MODEL_FREE}
    bench = stages.with_data("heldout")  # its prompt, for every pruner here
    exact = build_pruner(with_scorer(bench, stages.spec.exact), model, tokenizer)
    with open_dict(bench):
        bench.bench = {"hybrid": cfg.scorer, "methods": [{"surrogate": path} for path in surrogates.values()]}
    methods = Methods(bench, model, tokenizer)
    names = dict(zip(surrogates, methods.specs))
    rows = labelled_records(bench, [stages.records("heldout")])
    compared = against_labels(
        bench, methods, list(names.values()), rows, exact, model, tokenizer, fractions, stages.spec.uniform
    )
    results = {key: compared["methods"][name] for key, name in names.items()}
    learned, _ = load_surrogate(surrogates["learned"], cfg.model.path, model)
    groups = groups_of(bench, rows, learned.feature_set, learned.config["horizon"], exact)
    return {
        "heldout": {
            "records": compared["records"],
            "exact": compared["methods"]["exact_packed"],
            **results,
            "uniform": compared["baselines"]["uniform"],
        },
        "surrogate": {
            "file": surrogates["learned"],
            "heldout_ranking": ranking_metrics(groups, predict(learned, groups)),
            "validation": trained["val"] if (trained := training(stages)) else None,
        },
    }


def report(stages: Stages, compared: dict, chains: list[Chain]) -> dict:
    """Stage 7: the comparison next to what labelling, the held-out runs and pruning cost (the pruning against exact
    greedy's price for the same chains)."""
    return {
        "model": stages.cfg.model.path,
        "data": stages.cfg.data.path,
        "keep": stages.keep,
        **compared,
        "cost": {
            **{stage: cost_of(stages.records(stage)) for stage in ("label", "heldout")},
            "train_wall_s": (training(stages) or {}).get("wall_s"),  # stage 4: features and fit
            "pruned": saving(stages, chains),
        },
    }


def comparison_lines(compared: dict, keep: float) -> list[str]:
    """Stage 5's result as a few lines: each hybrid against exact on the held-out chains, and the surrogate there."""
    keep, lines = f"{keep:g}", []
    for name in ("learned", "model_free"):
        row = compared["heldout"][name]
        lines.append(
            f"  {name:10s}  {row['speedup_tokens']:.2f}× fewer tokens, Jaccard@{keep} {row['jaccard'][keep]:.3f}, "
            f"J gap {row['final_objective_gap_nats']:+.2f} nats, J retention {row['j_retention']}, "
            f"step agreement {row['step_agreement']:.3f}"
        )
    ranking = compared["surrogate"]["heldout_ranking"]
    lines.append(f"  surrogate   held-out Pearson {ranking['pearson']:.3f}, recall@8 {ranking['recall@8']:.3f}")
    return lines


def cost_line(result: dict) -> str:
    """What labelling and pruning the rest cost, in a line."""
    label, trained, pruned = result["cost"]["label"], result["cost"]["train_wall_s"], result["cost"]["pruned"]
    train_h = f", training {trained['total'] / 3600:.2f} h" if trained else ""
    return (
        f"  cost        labelling {label['records']} chains {label['wall_s'] / 3600:.2f} h{train_h}; pruning "
        f"{pruned['records']} chains with the hybrid {pruned['wall_s'] / 3600:.2f} h, {pruned['fewer_tokens']}× fewer "
        f"tokens than exact greedy would take (cost model)"
    )


def run(cfg: DictConfig) -> dict:
    setup_runtime(cfg)
    stages = Stages(cfg)
    stages.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(**cfg.model)
    if stages.spec.surrogate:  # one made for another model is refused before any work
        load_surrogate(stages.spec.surrogate, cfg.model.path, model)
    elif any("attention" in block for block in feature_blocks(cfg.surrogate.feature_set)):
        attention_modules(model)  # a layout it cannot read is named before any work
    exact = build_pruner(with_scorer(cfg, stages.spec.exact), model, tokenizer)
    chains, records = chains_of(exact, read_data(cfg, exact))

    given = settings(cfg, "hybrid_prune.keep", "hybrid_prune.estimate")
    found = saved(stages.out / "estimate.json", lambda: estimate(stages, exact, chains, records), given)
    print(
        f"Estimate (exact scoring measured at {found['scoring_tokens_per_s']:.0f} tokens/s): exact greedy on "
        f"{len(chains)} chains "
        f"{found['exact']['hours']:.2f} h, the hybrid about {found['hybrid']['hours']:.2f} h "
        f"({found['hybrid']['assumes']})"
    )
    if stages.spec.stop_after == "estimate":
        return {"estimate": found}

    def make_plan() -> dict:
        held_chains, held_records = chains, records
        if stages.spec.heldout.data is not None:  # encoded with their own data set's prompt
            source = stages.with_data("heldout")
            other = build_pruner(with_scorer(source, stages.spec.exact), model, tokenizer)
            held_chains, held_records = chains_of(other, read_data(source, other))
        chosen = plan(stages, chains, held_chains, found)
        write_subsets(stages, chosen, {**records, **held_records})
        return chosen

    given = settings(
        cfg,
        "hybrid_prune.keep",
        "hybrid_prune.estimate",
        "hybrid_prune.surrogate",
        "hybrid_prune.label",
        "hybrid_prune.heldout",
        "hybrid_prune.prune",
        "runtime.seed",
    )
    chosen = saved(stages.out / "plan.json", make_plan, given)
    print(
        f"Plan: label {len(chosen['label'])} chains (about {chosen['label_estimate_s'] / 3600:.2f} h), hold out "
        f"{len(chosen['heldout'])}, prune {len(chosen['rest'])} with the hybrid ({stages.out / 'plan.json'})"
    )
    if stages.spec.stop_after == "plan":
        return {"estimate": found, "plan": chosen}

    label(stages, chosen)
    if stages.spec.stop_after == "label":
        return {"estimate": found, "plan": chosen}

    if not stages.spec.surrogate and not Path(stages.surrogate()).exists():
        print(f"\nTraining a surrogate for {cfg.model.path} on {len(chosen['label'])} labelled chains")
        exact_cfg = with_scorer(cfg, stages.spec.exact)  # its features are read with the exact scorer's pruner
        train(exact_cfg, [str(stages.records("label"))], stages.surrogate(), stages.out / "surrogate")
    if stages.spec.stop_after == "train":
        return {"estimate": found, "plan": chosen}

    given = settings(
        cfg,
        "hybrid_prune.keep",
        "hybrid_prune.surrogate",
        "hybrid_prune.heldout",
        "scorer",
        "pruner.prune.keep_fractions",
        "runtime.seed",
    )
    compared = saved(stages.out / "compare.json", lambda: compare(stages, model, tokenizer), given, redo=True)
    held = compared["heldout"]
    points = {"exact greedy": held["exact"], "learned hybrid": held["learned"], "model-free hybrid": held["model_free"]}
    dial = plot_dial(points, stages.keep, stages.out / "dial.png")
    print("\nHeld-out chains against exact greedy:\n" + "\n".join(comparison_lines(compared, stages.keep)))
    print(f"({stages.out / 'compare.json'}; dial.png plots it)")
    if stages.spec.stop_after == "compare":
        return {"estimate": found, "plan": chosen, "compare": compared}

    if chosen["rest"] and not done(stages.records("pruned"), chosen["rest"]):
        print(f"\nPruning {len(chosen['rest'])} chains with the hybrid → {stages.out / 'pruned'}")
        prune_job.run(stages.job("rest", "pruned", stages.hybrid(stages.surrogate()), labels=False))
    if stages.spec.stop_after == "prune":
        return {"estimate": found, "plan": chosen, "compare": compared}

    result = report(stages, compared, chains)
    (stages.out / "report.json").write_text(json.dumps(result, indent=2))
    tracker = start_tracking(cfg, stages.out, "hybrid_prune")
    publish(stages.out, tracker, "report", result, {"hybrid_prune/dial": dial})
    tracker.finish()
    print(cost_line(result))
    print(f"Report: {stages.out / 'report.json'}")
    return {"estimate": found, "plan": chosen, "compare": compared, "report": result}
