"""Exact greedy pruning: sequences, objectives, the naive and packed scorers, and the greedy loop."""

from exact.greedy import GreedyTrace, greedy_prune
from exact.pruner import GreedyPruner, InvalidInstance
from exact.record import PruneRecord
from exact.result import PruneResult
from exact.scorers import NaiveScorer, PackedScorer, Scorer
from exact.sequence import Segments, encode

__all__ = [
    "GreedyPruner",
    "GreedyTrace",
    "InvalidInstance",
    "NaiveScorer",
    "PackedScorer",
    "PruneRecord",
    "PruneResult",
    "Scorer",
    "Segments",
    "encode",
    "greedy_prune",
]
