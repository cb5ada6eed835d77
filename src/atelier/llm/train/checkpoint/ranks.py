"""Which rank this process is in each parallel dimension, and the collectives saving needs.

Built from the training run's `DeviceMesh` (dimension names `dp`, `tp`, later `pp`), or for
a single process without any process group. Checkpoint code asks only this object, so it
runs the same under torchrun, `--nproc-per-node` and a plain `python` process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from atelier.llm.train.checkpoint.shards import TP_DIM


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    dp: int = 1
    dp_rank: int = 0
    tp: int = 1
    tp_rank: int = 0
    pp: int = 1
    pp_rank: int = 0

    @classmethod
    def from_mesh(cls, mesh: Any | None) -> Ranks:
        """Ranks of this process in `mesh` (None: one process, or the default group only)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        rank, world = dist.get_rank(), dist.get_world_size()
        if mesh is None:
            return cls(rank=rank, world=world, dp=world, dp_rank=rank)
        sizes = dict.fromkeys(("dp", TP_DIM, "pp"), 1)
        local = dict.fromkeys(("dp", TP_DIM, "pp"), 0)
        for i, name in enumerate(mesh.mesh_dim_names or ()):
            key = name if name in sizes else "dp"  # dp_shard, dp_replicate ... count as data
            sizes[key] *= mesh.size(i)
            local[key] = local[key] * mesh.size(i) + mesh.get_local_rank(i)
        return cls(
            rank=rank,
            world=world,
            dp=sizes["dp"],
            dp_rank=local["dp"],
            tp=sizes[TP_DIM],
            tp_rank=local[TP_DIM],
            pp=sizes["pp"],
            pp_rank=local["pp"],
        )

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writes_rank_file(self) -> bool:
        """One process per (tp, pp) cell writes its rank file: the first data-parallel one."""
        return self.dp_rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def all_true(self, ok: bool) -> bool:
        """True only when `ok` holds on every rank (used to commit or abandon a save)."""
        if not self.distributed:
            return ok
        flag = [ok]
        flags: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(flags, flag)
        return all(f[0] for f in flags)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a path, a decision)."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
