"""Deterministic shards of a data set by record id, for one job per shard (e.g. a Slurm array).

A record belongs to shard `sha256(id) mod n`: stable across processes, machines and Python versions
(unlike `hash()`), so every shard job selects its part without talking to the others, and duplicate
ids land in the same shard, where the prune job reports them.

Sharding applies *after* `data.limit` and the length window: `data.limit=200 runtime.num_shards=8`
prunes the same 200 records as an unsharded run, split eight ways (about 25 each, not 200 each).
Bad input (an undecodable line, a missing field) is keyed by where it is, so exactly one shard reports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from src.data import BadInput


def shard_of(key: str, num_shards: int) -> int:
    """The shard (0 … num_shards−1) of a record id or any other string key."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % num_shards


def shard_key(item: dict[str, Any] | BadInput) -> str:
    """A record's id, or for bad input the place it names (it may have no id)."""
    return item.where if isinstance(item, BadInput) else str(item["id"])


def check_shard(shard: int, num_shards: int) -> None:
    """Raise ValueError unless 0 ≤ shard < num_shards."""
    if num_shards < 1:
        raise ValueError(f"runtime.num_shards must be at least 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(f"runtime.shard must be in 0…{num_shards - 1} (runtime.num_shards={num_shards}), got {shard}")


def take_shard(
    items: Iterable[dict[str, Any] | BadInput], shard: int, num_shards: int
) -> Iterator[dict[str, Any] | BadInput]:
    """The items of shard `shard` of `num_shards`, in input order; all of them when num_shards is 1.

    Raises ValueError at once for a shard outside 0 … num_shards−1.
    """
    check_shard(shard, num_shards)
    return (item for item in items if num_shards == 1 or shard_of(shard_key(item), num_shards) == shard)
