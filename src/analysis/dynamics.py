"""Is importance re-evaluated as the chain contracts? Rank dynamics from recorded step scores (§5.2, Fig. 5).

For a keep-fraction transition a → b, S is the set of tokens greedy deletes between a and b. Three
rankings of the tokens still kept at a each predict the |S| tokens to go next; Hit@|S| is the share
of S they name:
- local: the step scores recorded at a (the ranking greedy itself uses at that moment);
- frozen: the step scores of the unpruned chain (keep 1.0), never updated;
- random: the expected hit of a random choice, |S| / (tokens kept at a).
Local below 1 and frozen falling with depth mean each deletion changes what matters next.
Needs records written with `pruner.prune.record_scores=true` and one deletion per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exact.keep import n_kept


def _top(scores: list[list[float]], allowed: set[int], k: int) -> set[int]:
    """The k allowed indices whose deletion leaves J highest (ties: lowest index)."""
    ranked = sorted((i for i in scores if int(i[0]) in allowed), key=lambda p: (-p[1], p[0]))
    return {int(i) for i, _ in ranked[:k]}


def transition_hits(record: dict[str, Any], start: float, end: float) -> dict[str, float] | None:
    """Hit@|S| of the local, frozen and random rankings for one record, or None when not recorded."""
    n, order, steps = record["n_reasoning_tokens"], record["deletion_order"], record.get("step_scores")
    a, b = n - n_kept(n, start), n - n_kept(n, end)
    if not steps or b > len(order) or a >= len(steps) or b == a:
        return None
    gone = set(order[a:b])
    alive = set(range(n)) - set(order[:a])
    return {
        "local": len(_top(steps[a], alive, len(gone)) & gone) / len(gone),
        "frozen": len(_top(steps[0], alive, len(gone)) & gone) / len(gone),
        "random": len(gone) / len(alive),
    }


def rank_dynamics(records: list[dict[str, Any]], keep_fractions: list[float]) -> dict[str, Any]:
    """Mean Hit@|S| per transition between consecutive keep fractions (descending), over records."""
    grid = sorted(set(keep_fractions) | {1.0}, reverse=True)
    rows = []
    for start, end in zip(grid, grid[1:]):
        hits = [h for h in (transition_hits(r, start, end) for r in records) if h is not None]
        if hits:
            rows.append(
                {
                    "transition": f"{start:g}→{end:g}",
                    "records": len(hits),
                    **{k: sum(h[k] for h in hits) / len(hits) for k in ("local", "frozen", "random")},
                }
            )
    if not rows:
        raise ValueError(
            "no record has step scores at these keep fractions; prune with pruner.prune.record_scores=true"
        )
    return {"transitions": rows}


def plot_dynamics(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Hit@|S| per transition: local (solid), frozen at keep 1.0 (dashed) and random (dotted), per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, result in results.items():
        rows = result["transitions"]
        x = [r["transition"] for r in rows]
        line = ax.plot(x, [r["local"] for r in rows], marker="o", label=f"{label}: local")[0]
        ax.plot(
            x, [r["frozen"] for r in rows], marker="s", linestyle="--", color=line.get_color(), label=f"{label}: frozen"
        )
        ax.plot(x, [r["random"] for r in rows], linestyle=":", color=line.get_color(), label=f"{label}: random")
    ax.set_xlabel("keep-fraction transition")
    ax.set_ylabel("Hit@|S|")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
