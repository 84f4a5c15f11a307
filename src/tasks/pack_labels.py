"""`+experiment=pack_labels`: labelling runs (and earlier packed labels) into one gzipped label file to commit.

The file keeps ids, deletion orders, objectives, step scores or exact checks, cost and a hash of each record's text,
never the text itself; `surrogate.labels` reads it back joined with `surrogate.label_sources`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from src.labels import label_rows, pack_labels
from surrogate.groups import labelled_steps


def run(cfg: DictConfig) -> dict:
    inputs = list(cfg.pack.inputs)
    written = pack_labels(label_rows(inputs), cfg.pack.output)
    steps = sum(len(labelled_steps(row)) for row in label_rows([cfg.pack.output]))
    print(f"{written} labelled records ({steps} steps) from {', '.join(inputs)} packed into {cfg.pack.output}")
    return {"records": written, "steps": steps, "output": str(cfg.pack.output)}
