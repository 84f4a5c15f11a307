"""The hybrid's dial: tokens saved against agreement with exact greedy, one point per method (k or ε)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_dial(methods: dict[str, dict[str, Any]], keep: float, path: str | Path) -> Path:
    """Two panels over token speedup: kept-set Jaccard at `keep`, and the final-J gap to exact (nats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"{keep:g}"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for name, row in methods.items():
        x = row["speedup_tokens"]
        top.scatter(x, row["jaccard"][key], s=30)
        top.annotate(name, (x, row["jaccard"][key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        bottom.scatter(x, row["final_objective_gap_nats"], s=30)
        gap = row["final_objective_gap_nats"]
        bottom.annotate(name, (x, gap), fontsize=7, xytext=(3, 3), textcoords="offset points")
    top.set_ylabel(f"kept-set Jaccard with exact at keep {key}")
    top.set_ylim(0, 1.05)
    bottom.set_ylabel(f"final J − exact J at keep {key} (nats)")
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_xlabel("tokens saved: exact tokens / method tokens")
    for axis in (top, bottom):
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
    fig.suptitle("Hybrid pruning: speed against agreement with exact greedy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
