"""Training groups for the surrogate: one (record, step) each, with features and exact labels.

Labels come from exact greedy runs with `record_scores=true` (the step scores of every candidate).
Features are recomputed on each step's pruned chain and cached on disk, keyed by pruner model and
record, so training and evaluation never rerun the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from exact import GreedyPruner
from surrogate.features import ChainFeatures, feature_matrix, reasoning_features


@dataclass
class Group:
    """One greedy step: features (m, L·H) and exact post-deletion scores (m,) of its m candidates."""

    record_id: str
    step: int
    features: torch.Tensor
    labels: torch.Tensor


def read_labeled(path: str | Path) -> list[dict]:
    """Records of a labelling run (records.jsonl) that carry step scores."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    labeled = [r for r in rows if r.get("step_scores")]
    if not labeled:
        raise ValueError(f"{path} has no records with step_scores; label with pruner.record_scores=true")
    return labeled


def model_key(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:12]


def step_features(pruner: GreedyPruner, record: dict) -> list[ChainFeatures]:
    """Features of the kept reasoning tokens at every recorded step of `record`."""
    segments = pruner.encode(record["question"], record["reasoning"], record["answer"])
    if len(segments.reasoning) != record["n_reasoning_tokens"]:
        raise ValueError(
            f"record {record['id']!r}: reasoning has {len(segments.reasoning)} tokens under this pruner and prompt, "
            f"but was labelled with {record['n_reasoning_tokens']}; use the labelling run's model and data config"
        )
    model, kept, out = pruner.scorer.model, list(range(len(segments.reasoning))), []
    for step in range(len(record["step_scores"])):
        ids = segments.with_kept(torch.tensor(kept))
        out.append(reasoning_features(model, ids, len(segments.prompt), len(kept)))
        kept.remove(record["deletion_order"][step])
    return out


def build_groups(
    records: list[dict], pruner: GreedyPruner, cache_dir: str | Path, feature_set: str, progress: bool = True
) -> list[Group]:
    """Groups of every step of every record; raw features come from the cache or are computed once and cached."""
    folder = Path(cache_dir) / model_key(pruner.model_name)
    folder.mkdir(parents=True, exist_ok=True)
    groups = []
    for record in tqdm(records, desc="features", unit="rec", disable=not progress):
        steps = len(record["step_scores"])
        key = json.dumps([record["id"], record["reasoning"], record["deletion_order"][:steps]])
        cached = folder / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if cached.exists():
            features = [ChainFeatures(**step) for step in torch.load(cached, weights_only=True)]
        else:
            features = step_features(pruner, record)
            torch.save([vars(step) for step in features], cached)
        for step, (raw, scores) in enumerate(zip(features, record["step_scores"])):
            index = torch.tensor([int(i) for i, _ in scores])
            kept = sorted(set(range(record["n_reasoning_tokens"])) - set(record["deletion_order"][:step]))
            if index.tolist() != kept:
                raise ValueError(f"record {record['id']!r} step {step}: scores do not cover the kept tokens")
            labels = torch.tensor([s for _, s in scores], dtype=torch.float64)
            groups.append(Group(record["id"], step, feature_matrix(raw, feature_set), labels))
    return groups
