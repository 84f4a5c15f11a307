"""What one pruned instance gives back: its record, and the chain rendered at any keep fraction."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exact.keep import kept_indices
from exact.record import PruneRecord

if TYPE_CHECKING:
    import pandas as pd

_STRUCK = "color:#aaa;text-decoration:line-through"


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

    def to_frame(self, categories: Sequence[str | None] | None = None) -> pd.DataFrame:
        """One row per reasoning unit, in reading order (a table like ContextCite's attributions).

        Columns: `position`; `token`; `deletion_step`, 1 for the first unit deleted (`<NA>`: never
        deleted); `category`, from `categories` (one per unit; None without them); `objective_after`,
        J once that deletion is made, `record.step_objective[deletion_step]` (index 0 is the full chain's
        J). It is NaN for units never deleted and for deletions whose J was not evaluated: all of a static
        baseline's (empty `step_objective`), and those inside a round of more than two (`per_step` > 2).
        """
        import pandas as pd

        n = len(self.tokens)
        if categories is not None and len(categories) != n:
            raise ValueError(f"{len(categories)} categories for {n} reasoning units")
        step = {unit: s for s, unit in enumerate(self.deletion_order, start=1)}
        objective = self.record.step_objective or []

        def after(s: int | None) -> float:
            value = objective[s] if s is not None and s < len(objective) else None
            return float("nan") if value is None else float(value)

        steps = [step.get(i) for i in range(n)]
        return pd.DataFrame(
            {
                "position": range(n),
                "token": self.tokens,
                "deletion_step": pd.array(steps, dtype="Int64"),
                "category": list(categories) if categories is not None else [None] * n,
                "objective_after": [after(s) for s in steps],
            }
        )

    def _repr_html_(self) -> str:
        """Notebook display: one block per keep fraction in `record.pruned`, largest first, deleted tokens struck."""
        keeps = sorted((float(k) for k in self.record.pruned), reverse=True)
        if not keeps:
            return self._html_block("no keep fraction reached", set())
        n = len(self.tokens)
        blocks = []
        for keep in keeps:
            gone = self.deleted(keep)
            blocks.append(self._html_block(f"keep {keep:g} · {n - len(gone)}/{n} tokens", gone))
        return "".join(blocks)

    def _html_block(self, title: str, gone: set[int]) -> str:
        body = "".join(
            f"<span style='{_STRUCK}'>{html.escape(t)}</span>" if i in gone else html.escape(t)
            for i, t in enumerate(self.tokens)
        )
        return f"<div><strong>{html.escape(title)}</strong><pre style='white-space:pre-wrap'>{body}</pre></div>"
