"""Scale-out: deterministic sharding by record id (Slurm arrays), merging shards, and data-parallel Ray pruning.

`shards` and `merge` need nothing beyond the core install; `ray_prune` needs the `[scale]` extra (ray[data]).
"""
