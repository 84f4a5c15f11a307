"""What one pruned instance gives back: its record, and the chain rendered at any keep fraction."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from exact.keep import kept_indices
from exact.record import PruneRecord


@dataclass
class PruneResult:
    """One pruned instance: the output record, plus what is needed to render it at any keep fraction."""

    record: PruneRecord
    render: Callable[[list[int]], str]  # kept unit indices -> reasoning text

    @property
    def deletion_order(self) -> list[int]:
        return self.record.deletion_order

    @property
    def tokens(self) -> list[str]:
        return self.record.reasoning_tokens

    def at(self, keep: float) -> str:
        """The pruned reasoning text at `keep`."""
        return self.render(kept_indices(len(self.tokens), self.deletion_order, keep))

    def deleted(self, keep: float) -> set[int]:
        kept = set(kept_indices(len(self.tokens), self.deletion_order, keep))
        return set(range(len(self.tokens))) - kept

    def show(self, keep: float, mark: Callable[[str], str] = lambda t: f"[{t}]") -> str:
        """The full chain with the tokens deleted at `keep` passed through `mark` (default: [bracketed])."""
        gone = self.deleted(keep)
        return "".join(mark(t) if i in gone else t for i, t in enumerate(self.tokens))

    def _repr_html_(self) -> str:
        keep = min(float(k) for k in self.record.pruned)
        gone = self.deleted(keep)
        style = "color:#aaa;text-decoration:line-through"
        body = "".join(
            f"<span style='{style}'>{html.escape(t)}</span>" if i in gone else html.escape(t)
            for i, t in enumerate(self.tokens)
        )
        return f"<div><strong>keep {keep:g}</strong><pre style='white-space:pre-wrap'>{body}</pre></div>"
