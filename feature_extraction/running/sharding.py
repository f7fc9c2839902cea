"""Splitting a slide list over processes started by torchrun or SLURM.

Each process takes every ``world_size``-th slide of the sorted list, starting at its ``rank``.
Processes never talk to each other: they share one output folder, and every file in it appears
atomically, so a slide is done exactly once when every process finishes, and a rerun (with any
number of processes) picks up whatever is missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mil_crcrs.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` processes (``local_rank`` counts within a node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1


def _env_int(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {key}={value!r} is not an integer") from None


def current_shard(env: Mapping[str, str] | None = None) -> Shard:
    """Read the shard from ``RANK``/``WORLD_SIZE`` (torchrun) or ``SLURM_PROCID``/``SLURM_NTASKS``.

    Without either pair the process is alone: ``Shard(0, 1)``.
    """
    env = os.environ if env is None else env
    for rank_key, world_key, local_key, local_world_key in (
        ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    ):
        rank, world = _env_int(env, rank_key), _env_int(env, world_key)
        if rank is None and world is None:
            continue
        if rank is None or world is None:
            raise InputError(f"{rank_key} and {world_key} must be set together")
        if world < 1 or not 0 <= rank < world:
            raise InputError(f"{rank_key}={rank} must lie in 0..{world_key}-1 = {world - 1}")
        local = _env_int(env, local_key)
        local_world = None
        if local_world_key == "SLURM_NTASKS_PER_NODE":
            # SLURM writes e.g. "4" or "4(x2)"
            text = env.get(local_world_key, "").split("(")[0]
            local_world = int(text) if text.isdigit() else None
        else:
            local_world = _env_int(env, local_world_key)
        return Shard(rank, world, local if local is not None else 0, local_world or 1)
    return Shard()


def shard_items(items: Sequence[T], shard: Shard) -> list[T]:
    """Every ``world_size``-th item starting at ``rank`` (round robin keeps shards balanced)."""
    return list(items[shard.rank :: shard.world_size])


def default_num_workers(shard: Shard | None = None) -> int:
    """The CPUs this process may use (its share of the node), minus one for the main process."""
    shard = shard or Shard()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(0, min(16, cpus // max(1, shard.local_world_size) - 1))
