"""Partial state of the records in progress, so that a killed `prune` run continues inside a record.

The greedy loop reports its trace after every scoring round; `PartialStates` saves it to
`partial/<id>-<hash of id>.json` in the run directory (atomically, at most every
`runtime.checkpoint_every_s` seconds; 0: every round). A rerun continues a record from its file when
the file's fingerprint matches (the input's text and every setting that shapes the record), and
removes the file once the record is in records.jsonl. A state made with other settings (or text) is set
aside in `partial-stale/`, not overwritten, so changing a setting by mistake loses no work. One file:

    {"id": "gsm8k-12", "fingerprint": "<sha256 hex>",
     "state": {"deletion_order": [...], "step_objective": [...], "step_scores": null,
               "tokens_processed": 51234, "forward_passes": 96, "wall_s": 12.7}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from exact import GreedyTrace
from src.outputs import write_atomic

log = logging.getLogger(__name__)


def fingerprint(item: dict, cfg: DictConfig) -> str:
    """Hash of what a greedy record depends on: the instance's text, the prompt, model, pruner and scorer settings."""
    text = {key: item[key] for key in ("question", "reasoning", "answer")}
    prompt = {"system_prompt": cfg.data.system_prompt, "answer_delimiter": cfg.data.answer_delimiter}
    settings = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in ("model", "pruner", "scorer")}
    blob = json.dumps([text, prompt, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_name(rid: str) -> str:
    """A file name for record `rid`: its safe characters, then a hash of the id that keeps distinct ids apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rid)[:80]
    return f"{safe}-{hashlib.sha256(rid.encode()).hexdigest()[:12]}.json"


class PartialStates:
    """The `partial/` folder of a run directory: the saved greedy state of each record in progress."""

    def __init__(self, run_dir: str | Path, every_s: float = 0.0):
        self.folder = Path(run_dir) / "partial"
        self.every_s = every_s

    def path(self, rid: str) -> Path:
        return self.folder / file_name(rid)

    def load(self, rid: str, key: str) -> GreedyTrace | None:
        """Record `rid`'s saved state, or None: no file, or an unreadable one or one for another `key` (warned)."""
        path = self.path(rid)
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            matches = saved["id"] == rid and saved["fingerprint"] == key
            state = GreedyTrace(**saved["state"])
        except (ValueError, KeyError, TypeError) as err:  # JSON and UTF-8 decoding errors are ValueErrors
            log.warning("%s: unreadable partial state (%r); record %r starts afresh", path, err, rid)
            return None
        if not matches:
            kept = self.folder.parent / "partial-stale" / path.name
            kept.parent.mkdir(exist_ok=True)
            path.replace(kept)
            log.warning(
                "%s: partial state of another input or other settings; record %r starts afresh (the state is kept in "
                "%s: to continue it, move it back and rerun with the settings it was made with)",
                path,
                rid,
                kept,
            )
            return None
        return state

    def saver(self, rid: str, key: str) -> Callable[[GreedyTrace], None]:
        """An `on_state` callback that saves record `rid`'s state, at most once every `every_s` seconds."""
        path = self.path(rid)
        last = time.monotonic()

        def save(state: GreedyTrace) -> None:
            nonlocal last
            if time.monotonic() - last < self.every_s:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"id": rid, "fingerprint": key, "state": asdict(state)}))
            last = time.monotonic()

        return save

    def remove(self, rid: str) -> None:
        """Forget record `rid`'s state (it is finished)."""
        self.path(rid).unlink(missing_ok=True)
