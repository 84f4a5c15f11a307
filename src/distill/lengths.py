"""Pruned reasoning at a keep fraction measured in the STUDENT's tokens, for any method's record.

Methods rank different units (pruner tokens, words). To compare them at equal length, every ranking
is projected onto the student's tokens: a student token is deleted at the step by which most of its
characters are deleted. Deleting the earliest ⌊(1 − keep) · L⌋ student tokens then leaves
⌊keep · L⌋, and the decoded text re-tokenizes to that length within ±1 (a merge at a cut can differ).
"""

from __future__ import annotations

import bisect
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from exact.keep import n_kept

TOLERANCE = 1


class InsufficientRanking(ValueError):
    """A record's deletion order stops before the student-token target is reached."""


@dataclass
class Matched:
    """Pruned reasoning for the student: its text, its length in student tokens, and the target length."""

    text: str
    length: int
    target: int


def unit_spans(text: str, units: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each unit in `text`; units are aligned in order (decoding may alter characters)."""
    joined = "".join(units)
    starts = [0]
    for unit in units:
        starts.append(starts[-1] + len(unit))
    if joined == text:
        return list(zip(starts[:-1], starts[1:]))
    to_text = [-1] * len(joined)
    for block in difflib.SequenceMatcher(None, joined, text, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            to_text[block.a + k] = block.b + k
    spans, end = [], 0
    for a, b in zip(starts[:-1], starts[1:]):
        mapped = [to_text[k] for k in range(a, b) if to_text[k] >= 0]
        span = (mapped[0], mapped[-1] + 1) if mapped else (end, end)
        spans.append(span)
        end = span[1]
    return spans


def student_token_steps(
    text: str, units: Sequence[str], deletion_order: Sequence[int], offsets: Sequence[tuple[int, int]]
) -> list[float]:
    """Deletion step of each student token (its offsets in `text`): when most of its characters are gone.

    A token's step is the step by which the units covering at least half of its characters have been
    deleted; units never deleted have step ∞. A token that overlaps no unit (e.g. whitespace between
    words) goes with the next token that does.
    """
    step = [math.inf] * len(units)
    for s, unit in enumerate(deletion_order):
        step[unit] = s
    spans = unit_spans(text, units)
    starts = [s for s, _ in spans]
    steps: list[float | None] = []
    for a, b in offsets:
        cover, u = [], bisect.bisect_left(starts, b) - 1  # the last unit starting before the token ends
        while u >= 0 and spans[u][1] > a:
            overlap = min(b, spans[u][1]) - max(a, spans[u][0])
            if overlap > 0:
                cover.append((step[u], overlap))
            u -= 1
        steps.append(_half_gone(cover))
    following = math.inf
    for i in reversed(range(len(steps))):
        if steps[i] is None:
            steps[i] = following
        following = steps[i]
    return steps


def _half_gone(cover: list[tuple[float, int]]) -> float | None:
    """The step by which at least half of the covered characters are deleted."""
    if not cover:
        return None
    total, gone = sum(n for _, n in cover), 0
    for step, n in sorted(cover):
        gone += n
        if 2 * gone >= total:
            break
    return step


def match_length(
    text: str, units: Sequence[str], deletion_order: Sequence[int], student_tokenizer, keep: float, record_id: str = ""
) -> Matched:
    """The reasoning pruned by `deletion_order` to ⌊keep · L⌋ student tokens (±1), L its student length."""
    if not getattr(student_tokenizer, "is_fast", False):
        raise TypeError("length matching needs a fast (Rust) student tokenizer for character offsets")
    encoded = student_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    target = n_kept(len(ids), keep)
    steps = student_token_steps(text, units, deletion_order, offsets)
    order = sorted(range(len(ids)), key=lambda i: (steps[i], i))
    best = None
    deletions = len(ids) - target
    for _ in range(8):
        deletions = min(max(deletions, 0), len(ids))
        if deletions and steps[order[deletions - 1]] == math.inf:
            raise InsufficientRanking(
                f"record {record_id!r}: its deletion order ({len(deletion_order)} of {len(units)} units) ends before "
                f"keep {keep:g} in student tokens; prune further (smaller keep fractions, "
                "or pruner.prune.prune_to_end=true)"
            )
        gone = set(order[:deletions])
        pruned = student_tokenizer.decode(
            [t for i, t in enumerate(ids) if i not in gone], clean_up_tokenization_spaces=False
        )
        length = len(student_tokenizer(pruned, add_special_tokens=False)["input_ids"])
        if best is None or abs(length - target) < abs(best.length - target):
            best = Matched(pruned, length, target)
        if abs(length - target) <= TOLERANCE:
            break
        deletions += length - target
    return best
