"""Training groups for the surrogate: one (record, step) each, with features, first-order scores and exact labels.

Labels come from exact greedy runs with `record_scores=true` (the step scores of every candidate along the
exact path) or from runs with `exact_checks` (every candidate scored exactly at some steps of the run's own
path: a hybrid run's are on-policy labels). Features are recomputed on each labelled step's pruned chain by
the same base pass the hybrid runs, and cached on disk keyed by pruner model and record, so training and
evaluation never rerun the model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from exact import GreedyPruner
from exact.greedy import distinct_candidates
from exact.scorers import PackedScorer, rerun_from
from surrogate.features import BLOCKS, candidate_features, feature_matrix, recording_received_attention, resume_at

FEATURES_VERSION = 3  # bump when the raw features change, so stale caches are not read


@dataclass
class Group:
    """One greedy step: features (m, F), priors f_h (m,) and exact post-deletion scores (m,) of the record's kept
    reasoning indices `kept` (m,) at this step. Greedy scores only the first token of each run of identical
    ones (`exact.greedy.distinct_candidates`): `candidates` indexes those into `kept` (None: all of them)."""

    record_id: str
    step: int
    features: torch.Tensor
    prior: torch.Tensor
    labels: torch.Tensor
    kept: torch.Tensor
    candidates: torch.Tensor | None = None

    def candidate_indices(self) -> torch.Tensor:
        """Indices into `kept` of the tokens greedy scores at this step."""
        return torch.arange(len(self.kept)) if self.candidates is None else self.candidates


def labelled_steps(record: dict[str, Any]) -> list[tuple[int, list[list[float]]]]:
    """(step, [[index, J after deleting it], ...] for every kept token) of each labelled step of `record`: its exact
    checks if it has any, else every recorded step of its exact greedy run."""
    if record.get("exact_checks"):
        return [(check["step"], check["scores"]) for check in record["exact_checks"]]
    return list(enumerate(record.get("step_scores") or []))


def encoder(pruner: GreedyPruner, record: dict) -> GreedyPruner:
    """`pruner`, or a copy of it that encodes with the record's own prompt (`record["prompt"]`: its label source's)."""
    prompt = record.get("prompt")
    if not prompt or prompt == {"system_prompt": pruner.system_prompt, "answer_delimiter": pruner.answer_delimiter}:
        return pruner
    own = copy.copy(pruner)  # shares the model
    own.system_prompt, own.answer_delimiter = prompt["system_prompt"], prompt["answer_delimiter"]
    return own


def model_key(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:12]


def step_features(
    pruner: GreedyPruner, record: dict, classes: torch.Tensor | None, horizon: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Raw features (every block) and priors (f_horizon) of the kept reasoning tokens at every labelled step."""
    segments = encoder(pruner, record).encode(record["question"], record["reasoning"], record["answer"])
    if len(segments.reasoning) != record["n_reasoning_tokens"]:
        raise ValueError(
            f"record {record['id']!r}: reasoning has {len(segments.reasoning)} tokens under this pruner and prompt, "
            f"but was labelled with {record['n_reasoning_tokens']}; use the labelling run's model and data config"
        )
    model = pruner.scorer.model
    scorer = PackedScorer(model, record.get("objective", "joint"))
    out, base, store = [], None, None
    prompt_len = len(segments.prompt)
    order = record["deletion_order"]
    for step, _ in labelled_steps(record):
        gone = set(order[:step])
        kept = [i for i in range(len(segments.reasoning)) if i not in gone]
        ids = segments.with_kept(torch.tensor(kept))
        first = resume_at(store, rerun_from(base, ids, prompt_len), prompt_len)  # at or before the last deletion
        with recording_received_attention(model, len(segments.answer), prompt_len, previous=store) as store:
            base = scorer.base_pass(ids, prompt_len, len(kept), splittable=False, previous=base, first=first)
        candidates = torch.arange(len(kept))
        prior = scorer.score_from(base, candidates, horizon).values if horizon else None
        raw = candidate_features(store, base, len(kept), candidates, BLOCKS, classes, prior)
        out.append({k: v.half() if "attention" in k else v for k, v in raw.items()})
    return out


def build_groups(
    records: list[dict],
    pruner: GreedyPruner,
    cache_dir: str | Path,
    feature_set: str,
    classes: torch.Tensor,
    progress: bool = True,
    horizon: int = 0,
) -> list[Group]:
    """Groups of every labelled step of every record, priors f_horizon; raw features come from the cache or are
    computed once and cached."""
    folder = Path(cache_dir) / model_key(pruner.model_name)
    folder.mkdir(parents=True, exist_ok=True)
    groups = []
    for record in tqdm(records, desc="features", unit="rec", disable=not progress):
        labelled = labelled_steps(record)
        steps = [step for step, _ in labelled]
        fields = [record[k] for k in ("id", "question", "reasoning", "answer")]
        order = record["deletion_order"][: steps[-1] + 1]
        which = [] if steps == list(range(len(steps))) else [steps]  # every step from the first: as keyed before
        own = encoder(pruner, record)
        prompt = [] if own is pruner else [record["prompt"]]  # the job's data prompt: as keyed before
        key = json.dumps([FEATURES_VERSION, *fields, record.get("objective"), order, horizon, *which, *prompt])
        cached = folder / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if cached.exists():
            features = torch.load(cached, weights_only=True)
        else:
            features = step_features(pruner, record, classes, horizon)
            torch.save(features, cached)
        tokens = own.encode(record["question"], record["reasoning"], record["answer"]).reasoning
        for raw, (step, scores) in zip(features, labelled):
            index = torch.tensor([int(i) for i, _ in scores])
            kept = sorted(set(range(record["n_reasoning_tokens"])) - set(record["deletion_order"][:step]))
            if index.tolist() != kept:
                raise ValueError(f"record {record['id']!r} step {step}: scores do not cover the kept tokens")
            labels = torch.tensor([s for _, s in scores], dtype=torch.float64)
            matrix = feature_matrix(raw, feature_set)
            candidates, _ = distinct_candidates(tokens[index])
            groups.append(Group(record["id"], step, matrix, raw["prior"].double(), labels, index, candidates))
    return groups
