"""The hybrid's dial: tokens saved against agreement with exact greedy, one point per method (k or ε)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_dial(
    methods: dict[str, dict[str, Any]], keep: float, path: str | Path, target: dict[str, float] | None = None
) -> Path:
    """Two panels over token speedup: kept-set Jaccard at `keep`, and the mean over records of |final J − exact's|.

    Points are numbered, and the legend names them. `target` ({speedup, jaccard, gap}) shades the
    region a method must reach: at least `speedup` fewer tokens, Jaccard ≥ `jaccard`, mean |gap| ≤ `gap`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"{keep:g}"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    colours = plt.get_cmap("tab20").colors
    for number, (name, row) in enumerate(methods.items(), start=1):
        x, colour = row["speedup_tokens"], colours[(number - 1) % len(colours)]
        for axis, y in ((top, row["jaccard"][key]), (bottom, row["final_objective_abs_gap_nats"])):
            axis.scatter(x, y, s=36, color=colour, label=f"{number}  {name}" if axis is top else None, zorder=3)
            axis.annotate(str(number), (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
    for axis in (top, bottom):
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
    if target:
        left, right = bottom.get_xlim()
        right = max(right, 1.2 * target["speedup"])
        shade = [target["speedup"], right]
        top.fill_between(shade, target["jaccard"], 1.05, color="green", alpha=0.1, lw=0)
        bottom.fill_between(shade, 0, target["gap"], color="green", alpha=0.15, lw=0)
        bottom.set_xlim(left, right)
    top.set_ylabel(f"kept-set Jaccard with exact at keep {key}")
    top.set_ylim(0, 1.05)
    bottom.set_ylabel(f"mean |final J − exact J| at keep {key} (nats)")
    bottom.set_xlabel("tokens saved: exact tokens / method tokens")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    title = "Hybrid pruning: speed against agreement with exact greedy"
    if target:
        title += f"\n(shaded: the target, ≥ {target['speedup']:g}× fewer tokens, Jaccard ≥ {target['jaccard']:g}, "
        title += f"mean |J gap| ≤ {target['gap']:g} nats)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
