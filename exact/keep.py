"""Keep-fraction arithmetic: how many reasoning tokens a keep fraction leaves, and the pruned text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def check_keep_fraction(keep: float) -> float:
    """Return `keep` as a float, or raise if it is outside (0, 1]."""
    keep = float(keep)
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep:g} (pruner.prune.keep_fractions)")
    return keep


def n_kept(n: int, keep: float) -> int:
    """floor(n · keep), robust to float error (0.29 · 100 keeps 29, not 28)."""
    return math.floor(n * check_keep_fraction(keep) + 1e-9)


def n_deletions(n: int, keep_fractions: Iterable[float], to_end: bool = False) -> int:
    """Deletions needed to reach the smallest keep fraction, or all n to get the full ranking."""
    fractions = list(keep_fractions)
    if to_end:
        return n
    if not fractions:
        raise ValueError("give at least one keep fraction, or prune to the end")
    return n - min(n_kept(n, f) for f in fractions)


def kept_indices(n: int, deletion_order: Sequence[int], keep: float) -> list[int]:
    """Reasoning indices (in order) that remain at `keep`, given a deletion order."""
    deletions = n - n_kept(n, keep)
    if deletions > len(deletion_order):
        raise ValueError(f"keep {keep} needs {deletions} deletions but only {len(deletion_order)} were made")
    gone = set(deletion_order[:deletions])
    return [i for i in range(n) if i not in gone]


def keep_key(keep: float) -> str:
    """The JSON key of a keep fraction in a record's `pruned` map: 0.5 -> "0.5"."""
    return f"{check_keep_fraction(keep):g}"


def kept_jaccard(n: int, order: list[int], reference: list[int], keep: float) -> float:
    """Jaccard overlap of the tokens two deletion orders keep at `keep`."""
    a, b = set(kept_indices(n, order, keep)), set(kept_indices(n, reference, keep))
    return len(a & b) / len(a | b) if a | b else 1.0
