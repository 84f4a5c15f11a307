"""The output record every pruning method writes (docs/DESIGN.md §6): one JSON line per instance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_FIELDS = (
    "id",
    "method",
    "objective",
    "pruner",
    "n_reasoning_tokens",
    "reasoning_tokens",
    "deletion_order",
    "step_objective",
    "step_perplexity",
    "pruned",
    "step_scores",
    "exact_checks",
    "cost",
)


@dataclass
class PruneRecord:
    """A pruned instance. `extra` carries the input's other fields (question, answer, gold, meta …)."""

    id: str
    method: str
    objective: str
    pruner: str
    n_reasoning_tokens: int
    reasoning_tokens: list[str]
    deletion_order: list[int]
    step_objective: list[float | None]
    step_perplexity: list[float | None]
    pruned: dict[str, str]
    cost: dict[str, Any]
    step_scores: list[list[list[float]]] | None = None
    exact_checks: list[dict] | None = None  # steps also scored exactly: {"step", "scores": [[index, J], ...], "tokens"}
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Flat JSON object: the schema fields, then the carried-through input fields."""
        row = asdict(self)
        extra = row.pop("extra")
        for optional in ("step_scores", "exact_checks"):
            if row[optional] is None:
                del row[optional]
        row.update({k: v for k, v in extra.items() if k not in SCHEMA_FIELDS})
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> PruneRecord:
        known = {k: row[k] for k in SCHEMA_FIELDS if k in row}
        return cls(**known, extra={k: v for k, v in row.items() if k not in SCHEMA_FIELDS})
