"""What pruning costs as chains grow (App. B.5): wall time and tokens processed against reasoning length.

Each run's records give (n, wall seconds, tokens processed); a power law y = c · n^α is fitted by least
squares in log-log space. Exact greedy with full recomputation is O(n³) tokens per chain (n steps × n
candidates × n tokens); the packed scorer's suffix-only work lowers the constant and, for the Answer
objective, the exponent; a hybrid verifying k candidates per step is O(k · n²).
Compare runs made with the same keep fractions on the same records.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scipy.stats import linregress


def power_law(lengths: list[float], values: list[float]) -> dict[str, float] | None:
    """Exponent α, prefactor c and r² of values ≈ c · lengths^α (None with fewer than 2 distinct lengths)."""
    pairs = [(n, v) for n, v in zip(lengths, values) if n > 0 and v > 0]
    if len({n for n, _ in pairs}) < 2:
        return None
    fit = linregress([math.log(n) for n, _ in pairs], [math.log(v) for _, v in pairs])
    return {"exponent": fit.slope, "prefactor": math.exp(fit.intercept), "r2": fit.rvalue**2}


def cost_scaling(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-record costs of a run and their power-law fits."""
    points = [
        {
            "id": r["id"],
            "n": r["n_reasoning_tokens"],
            "deletions": len(r["deletion_order"]),
            "wall_s": r["cost"]["wall_s"],
            "tokens_processed": r["cost"].get("tokens_processed"),
        }
        for r in records
    ]
    lengths = [p["n"] for p in points]
    return {
        "scorer": records[0]["cost"].get("scorer", records[0].get("method")),
        "points": points,
        "fit": {
            key: power_law(lengths, [p[key] for p in points])
            for key in ("wall_s", "tokens_processed")
            if all(p[key] is not None for p in points)
        },
    }


def plot_cost(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Log-log scatter of wall time and tokens processed against n, with each run's fitted power law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "tokens_processed", "tokens processed")):
        for run, result in results.items():
            fit = result["fit"].get(key)
            points = [(p["n"], p[key]) for p in result["points"] if p[key]]
            if not points:
                continue
            name = f"{run} (α = {fit['exponent']:.2f})" if fit else run
            dots = ax.scatter(*zip(*points), s=14, label=name)
            if fit:
                xs = sorted({n for n, _ in points})
                ax.plot(xs, [fit["prefactor"] * x ** fit["exponent"] for x in xs], color=dots.get_facecolor()[0])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("reasoning tokens n")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
