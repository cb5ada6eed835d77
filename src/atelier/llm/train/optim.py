"""AdamW as Megatron configures it, and global-norm clipping over every shard.

Weight decay applies to matrices only: biases and 1-D parameters (norms) get `wd_mult` 0,
as Megatron's `_get_param_groups`. Groups are also split by device mesh, so torch's
foreach kernels never mix DTensors of a (dp, tp) mesh with those of the dp-only mesh
(norms are not tensor-parallel). Master weights are FSDP2's fp32 shards.
"""

from __future__ import annotations

import torch
from torch import nn

from atelier.llm.train.config import TrainConfig


def no_weight_decay(name: str, p: torch.Tensor) -> bool:
    return name.endswith(".bias") or p.ndim == 1


def _mesh_key(p: torch.Tensor) -> tuple:
    mesh = getattr(p, "device_mesh", None)
    return () if mesh is None else (tuple(mesh.mesh_dim_names or ()), tuple(mesh.shape))


def param_groups(model: nn.Module) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd_mult = 0.0 if no_weight_decay(name, p) else 1.0
        key = (wd_mult, _mesh_key(p))
        groups.setdefault(key, {"params": [], "names": [], "wd_mult": wd_mult})
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model),
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )


def grad_norm(params: list[torch.Tensor], world_size: int, pp: int = 1) -> torch.Tensor:
    """Global L2 norm of all gradients, each element counted once across every rank.

    A shard's squares are summed locally, divided by how many ranks hold the same values
    (mesh dims on which it is replicated; a pipeline stage's parameters live on its
    world_size / pp ranks only) and summed over the world in one all-reduce. The last
    stage's copy of a tied embedding (`pipeline_shared`) is not counted: its gradient
    equals the embedding's, counted on the first stage (Megatron's rule).
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard

    total: torch.Tensor | None = None
    for p in params:
        g = p.grad
        if g is None or getattr(p, "pipeline_shared", False):
            continue
        holders = world_size // pp
        if isinstance(g, DTensor):
            for size, pl in zip(g.device_mesh.shape, g.placements, strict=True):
                if isinstance(pl, Shard):
                    holders //= size
            g = g.to_local()
        sq = g.float().pow(2).sum() / holders
        total = sq if total is None else total + sq
    if total is None:  # e.g. a stage whose only parameter is a shared copy
        total = torch.zeros((), device=params[0].device if params else "cpu")
    if dist.is_initialized() and world_size > 1:
        dist.all_reduce(total)
    return total.sqrt()


def clip_gradients(
    params: list[torch.Tensor], max_norm: float, world_size: int, pp: int = 1
) -> torch.Tensor:
    """Scale every gradient by max_norm / norm when the norm exceeds it (Megatron's rule)."""
    norm = grad_norm(params, world_size, pp)
    if max_norm > 0:
        coeff = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in params:
            if p.grad is not None:
                g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                g.mul_(coeff.to(g.device))
    return norm
