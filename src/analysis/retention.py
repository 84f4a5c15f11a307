"""Which kinds of tokens a method keeps (paper §5.1, Fig. 3, Fig. 8).

Retention of a category at keep fraction k: of the units of that category in the unpruned chains,
the fraction still present at k, pooled over records. A method blind to categories sits on the
diagonal (retention = k); above it a category is over-retained, below it under-retained.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from src.analysis.categories import CATEGORIES, Annotator, unit_categories, words
from src.analysis.runs import deleted_at


def record_categories(record: dict[str, Any], annotator: Annotator) -> list[str]:
    """One category per unit of the record (sub-word pieces take their word's label)."""
    text = record["reasoning"]
    labels = annotator.labels(text, record.get("question", ""))
    return unit_categories(text, record["reasoning_tokens"], labels, words(text))


def label_runs(runs: dict[str, list[dict]], annotator: Annotator) -> dict[str, dict[str, list[str]]]:
    """Run label → record id → unit categories."""
    return {label: {r["id"]: record_categories(r, annotator) for r in records} for label, records in runs.items()}


def retention(
    records: list[dict[str, Any]], categories: dict[str, list[str]], keep_fractions: list[float]
) -> dict[str, Any]:
    """Per category, the retained fraction at each keep fraction the records reach (pooled counts)."""
    curves: dict[str, list[float | None]] = {c: [] for c in CATEGORIES}
    reached = []
    for keep in keep_fractions:
        total, kept = Counter(), Counter()
        count = 0
        for record in records:
            gone = deleted_at(record, keep)
            if gone is None:
                continue
            count += 1
            for i, category in enumerate(categories[record["id"]]):
                total[category] += 1
                kept[category] += i not in gone
        reached.append(count)
        for c in CATEGORIES:
            curves[c].append(kept[c] / total[c] if total[c] else None)
    return {"keep_fractions": list(keep_fractions), "records": reached, "retention": curves}


def distribution(records: list[dict[str, Any]], categories: dict[str, list[str]]) -> dict[str, float]:
    """Share of each category among the units of the unpruned chains (Fig. 8)."""
    counts = Counter(c for r in records for c in categories[r["id"]])
    total = sum(counts.values())
    return {c: counts[c] / total for c in CATEGORIES}


def plot_retention(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """One panel per category: retention against keep fraction for every run, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7), sharex=True, sharey=True)
    for ax, category in zip(axes.flat, CATEGORIES):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="uniform (diagonal)")
        for label, result in results.items():
            points = [(k, v) for k, v in zip(result["keep_fractions"], result["retention"][category]) if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(category)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("keep fraction")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of category retained")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_distribution(shares: dict[str, dict[str, float]], path: str | Path) -> Path:
    """Bars of category shares in the unpruned chains, one group per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(shares), 1)
    for j, (label, share) in enumerate(shares.items()):
        ax.bar([i + j * width for i in range(len(CATEGORIES))], [share[c] for c in CATEGORIES], width, label=label)
    ax.set_xticks([i + width * (len(shares) - 1) / 2 for i in range(len(CATEGORIES))], CATEGORIES)
    ax.set_ylabel("share of reasoning units")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
