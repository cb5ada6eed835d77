"""A parameter as one tensor-parallel rank stores it, whatever else shards it.

A rank file of Megatron holds what TP rank r owns: column-parallel weights cut on dim 0,
row-parallel ones on dim 1, norms whole. In training the same parameter may also be a
DTensor sharded by FSDP2 over the data-parallel mesh dimension. Gathering every mesh
dimension except the tensor-parallel one gives exactly TP rank r's tensor, one parameter
at a time (memory: one tensor, not the model).
"""

from __future__ import annotations

import torch

TP_DIM = "tp"


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def _names(mesh) -> tuple[str | None, ...]:
    """Mesh dimension names; an unnamed mesh has no tensor-parallel dimension."""
    return tuple(mesh.mesh_dim_names or (None,) * mesh.ndim)


def tp_local(t: torch.Tensor, tp_dim: str = TP_DIM) -> torch.Tensor:
    """The tensor TP rank r stores: every mesh dimension but `tp_dim` gathered (collective)."""
    DTensor = _dtensor()
    if not isinstance(t, DTensor):
        return t.detach()
    from torch.distributed.tensor import Replicate

    mesh = t.device_mesh
    keep = [
        p if n == tp_dim else Replicate() for n, p in zip(_names(mesh), t.placements, strict=True)
    ]
    if keep != list(t.placements):
        t = t.redistribute(mesh, keep)
    return t.to_local().detach()


def tp_local_shape(param: torch.Tensor, tp_dim: str = TP_DIM) -> tuple[int, ...]:
    """Shape of TP rank r's tensor for `param`, computed without communication."""
    DTensor = _dtensor()
    if not isinstance(param, DTensor):
        return tuple(param.shape)
    from torch.distributed.tensor import Shard

    shape = list(param.shape)
    mesh = param.device_mesh
    for i, (n, p) in enumerate(zip(_names(mesh), param.placements, strict=True)):
        if n == tp_dim and isinstance(p, Shard):
            size, rank = mesh.size(i), mesh.get_local_rank(i)
            full = shape[p.dim]
            chunk = -(-full // size)
            shape[p.dim] = max(0, min(full, chunk * (rank + 1)) - chunk * rank)
    return tuple(shape)
