"""The distillation results: one CSV row per (method, keep fraction), and the Fig. 2-style plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

COLUMNS = (
    "method",
    "keep",
    "accuracy",
    "mean_reasoning_tokens",
    "n_test",
    "dev_accuracy",
    "n_train",
    "mean_train_tokens",
    "train_wall_s",
)
ORIGINAL = "original"


class ResultsTable:
    """results.csv, appended one finished student at a time; a rerun skips the rows already there."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def has(self, method: str, keep: float) -> bool:
        return any(r["method"] == method and float(r["keep"]) == keep for r in self.rows)

    def add(self, row: dict[str, Any]) -> None:
        fresh = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if fresh:
                writer.writeheader()
            writer.writerow({k: row.get(k) for k in COLUMNS})
        self.rows.append({k: str(row.get(k)) for k in COLUMNS})


def plot_results(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Accuracy and mean generated reasoning length against keep fraction, one line per method.

    The student trained on the unpruned chains is the dashed line (and each method's point at keep 1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original = next((r for r in rows if r["method"] == ORIGINAL), None)
    methods = sorted({r["method"] for r in rows} - {ORIGINAL})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (axes[0], "accuracy", "test accuracy"),
        (axes[1], "mean_reasoning_tokens", "generated reasoning tokens"),
    ):
        for method in methods:
            points = sorted((float(r["keep"]), float(r[key])) for r in rows if r["method"] == method)
            if original is not None:
                points.append((1.0, float(original[key])))
            ax.plot(*zip(*points), marker="o", label=method)
        if original is not None:
            ax.axhline(float(original[key]), color="grey", linestyle="--", label="unpruned chains")
        ax.set_xlabel("keep fraction (student tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
