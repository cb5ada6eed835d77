"""Data and tensor parallelism with torch.distributed only, on one DeviceMesh.

The mesh has named dims ("dp", "tp"), TP innermost as Megatron orders ranks (room for
"pp" in front). Tensor parallelism is DTensor's `parallelize_module`: column-parallel
`linear_qkv`/`linear_fc1` with local outputs (each rank computes its own query groups and
its own [gate_r; up_r] chunk, which is exactly megatron's per-rank layout), row-parallel
`linear_proj`/`linear_fc2`, vocab-parallel embedding and output layer (logits gathered and
cut to the true vocabulary). FSDP2 `fully_shard` then shards every layer over "dp" with a
MixedPrecisionPolicy: fp32 master parameters and gradient reduction, bf16/fp16 compute
(left out for a single fp32 data-parallel rank, where it would only copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from atelier.core.device import distributed_backend, resolve_device_name
from atelier.core.errors import AtelierError
from atelier.llm.convert.sharding import check_tensor_parallel
from atelier.llm.convert.source import CheckpointSource
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.lora.module import apply_lora, freeze_base
from atelier.llm.train.lora.module import tp_plan as lora_tp_plan
from atelier.llm.train.model.args import ModelArgs
from atelier.llm.train.model.decoder import GPTModel
from atelier.llm.train.model.rope import inverse_frequencies
from atelier.llm.train.model.weights import rank_tensors
from atelier.llm.train.stages import StageSpec


@dataclass
class ParallelEnv:
    """Where this process sits: global rank, its (dp, tp) coordinates and device."""

    rank: int
    world_size: int
    dp: int
    tp: int
    dp_rank: int
    tp_rank: int
    device: torch.device
    mesh: object  # torch.distributed.device_mesh.DeviceMesh
    pp: int = 1  # pipeline stages; the mesh is then ("pp", "dp", "tp"), pp outermost
    pp_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(cfg: TrainConfig) -> ParallelEnv:
    """Join (or start, for one process) the process group and build the (dp, tp) mesh."""
    from torch.distributed.device_mesh import init_device_mesh

    kind = resolve_device_name(cfg.device).split(":", 1)[0]
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cpu":
        device = torch.device("cpu")
    else:
        device = torch.device(kind, local_rank)
        getattr(torch, kind).set_device(device)
    if not dist.is_initialized():  # NIC check, bounded rendezvous: multinode.py
        from atelier.llm.train.multinode import join_process_group

        join_process_group(distributed_backend(kind), cfg.distributed_timeout_minutes, str(device))
    world, tp = dist.get_world_size(), cfg.tensor_model_parallel_size
    pp = cfg.pipeline_model_parallel_size
    if world % tp:
        raise AtelierError(
            f"tensor_model_parallel_size {tp} does not divide the {world} processes; "
            f"use a divisor of {world}"
        )
    if world % (tp * pp):
        raise AtelierError(
            f"pipeline_model_parallel_size {pp} x tensor_model_parallel_size {tp} does not "
            f"divide the {world} processes; use sizes whose product divides {world}"
        )
    if pp > 1:  # Megatron's rank order: pipeline outermost, tensor innermost
        dims, names = (pp, world // (tp * pp), tp), ("pp", "dp", "tp")
    else:
        dims, names = (world // tp, tp), ("dp", "tp")
    mesh = init_device_mesh(kind, dims, mesh_dim_names=names)
    return ParallelEnv(
        rank=dist.get_rank(),
        world_size=world,
        dp=world // (tp * pp),
        tp=tp,
        dp_rank=mesh.get_local_rank("dp"),
        tp_rank=mesh.get_local_rank("tp"),
        device=device,
        mesh=mesh,
        pp=pp,
        pp_rank=mesh.get_local_rank("pp") if pp > 1 else 0,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_tensor_parallel(model: GPTModel, tp_mesh: object) -> None:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    layer_plan = {
        "self_attention.linear_qkv": ColwiseParallel(),
        "self_attention.linear_proj": RowwiseParallel(),
        "mlp.linear_fc1": ColwiseParallel(),
        "mlp.linear_fc2": RowwiseParallel(),
    }
    for layer in model.decoder.layers:  # (LoRA-wrapped linears: their parts placed)
        parallelize_module(layer, tp_mesh, lora_tp_plan(layer_plan, layer))
    top = {}
    if hasattr(model, "embedding"):  # every stage but the first of a pipeline has none
        top["embedding.word_embeddings"] = RowwiseParallel(input_layouts=Replicate())
    if hasattr(model, "output_layer"):  # used by output_logits, sharded over the vocab
        top["output_layer"] = ColwiseParallel(output_layouts=Replicate())
    parallelize_module(model, tp_mesh, top)


def set_recompute(model: GPTModel, cfg: TrainConfig) -> None:
    """Megatron's activation recomputation: full (uniform/block) or selective (attention)."""
    n = model.args.num_layers
    if cfg.recompute_granularity == "selective":
        for layer in model.decoder.layers:
            layer.self_attention.selective_recompute = True
    elif cfg.recompute_granularity == "full":
        if cfg.recompute_method == "uniform":
            k = cfg.recompute_num_layers or 1
            model.decoder.recompute_groups = [list(range(s, min(s + k, n))) for s in range(0, n, k)]
        else:  # block: the first recompute_num_layers layers, one at a time
            k = min(cfg.recompute_num_layers or n, n)
            model.decoder.recompute_groups = [[i] for i in range(k)]


def param_dtype(cfg: TrainConfig) -> torch.dtype:
    return torch.bfloat16 if cfg.bf16 else torch.float16 if cfg.fp16 else torch.float32


def build_model(
    args: ModelArgs,
    source: CheckpointSource,
    cfg: TrainConfig,
    env: ParallelEnv,
    stage: StageSpec | None = None,
) -> GPTModel:
    """The sharded model of this rank, its weights read from `source` (any TP layout);
    with `stage`, only that pipeline stage's part of it (`stages.StageModel`)."""
    from torch.distributed.tensor import DTensor

    check_tensor_parallel(env.tp, args.num_heads, args.num_groups, args.ffn_hidden_size)
    with torch.device("meta"):
        model = GPTModel(args) if stage is None else stage.module(args)
    if cfg.lora is not None:
        apply_lora(model, cfg.lora)
    if env.tp > 1:
        apply_tensor_parallel(model, env.mesh["tp"])
    model.inv_freq = inverse_frequencies(args.head_dim, args.rope_theta, args.rope_scaling).to(
        env.device
    )
    params = dict(model.named_parameters())  # on the meta device: shapes only
    divisible_by = cfg.make_vocab_size_divisible_by
    if stage is None:
        state = rank_tensors(source, args, env.tp, env.tp_rank, divisible_by)
    else:
        state = stage.tensors(source, args, env.tp, env.tp_rank, divisible_by)
    if cfg.lora is not None:
        from atelier.llm.train.lora.engine import lora_rank_state

        state = lora_rank_state(state, params, cfg, env, source)
    with torch.no_grad():
        for name in list(state):
            p = params.pop(name, None)
            if p is None:
                raise AtelierError(f"the checkpoint has {name}, which this model does not")
            local_shape = tuple(p.to_local().shape if isinstance(p, DTensor) else p.shape)
            t = state.pop(name)  # dropped as it is copied: the peak stays near one model
            if tuple(t.shape) != local_shape:
                raise AtelierError(
                    f"weights for {name}: shape {tuple(t.shape)} from the checkpoint does not "
                    f"match the model's {local_shape} at TP {env.tp}"
                )
            w = torch.empty(local_shape, dtype=torch.float32, device=env.device).copy_(t)
            del t
            if isinstance(p, DTensor):
                w = DTensor.from_local(w, p.device_mesh, p.placements, run_check=False)
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner), leaf, nn.Parameter(w))
    if params:
        raise AtelierError(f"the checkpoint gives no weights for {', '.join(sorted(params)[:4])}")
    if cfg.lora is not None:
        freeze_base(model, cfg.lora)
    set_recompute(model, cfg)
    for layer in model.decoder.layers:
        layer.self_attention.use_flash_attn = cfg.use_flash_attn
        if cfg.compile:
            layer.compile()
    if not (env.dp == 1 and param_dtype(cfg) == torch.float32):
        # (FSDP over one rank in fp32 is an identity that costs a copy of every parameter
        # and gradient per step, all-gather/reduce-scatter buffers; it is left out.)
        shard_data_parallel(model, cfg, env)
    # qk-norm weights are replicated but applied to this rank's heads only: their gradient
    # is a partial sum over TP ranks, completed by `sum_tp_partial_grads` (as Megatron).
    model.tp_partial_params = [
        p
        for n, p in model.named_parameters()
        if env.tp > 1 and ("q_layernorm" in n or "k_layernorm" in n)
    ]
    return model


def sum_tp_partial_grads(model: nn.Module, env: ParallelEnv) -> None:
    """All-reduce over TP the gradients each rank only computed a part of (qk-norm)."""
    params = getattr(model, "tp_partial_params", [])
    if not params:
        return
    group = env.mesh["tp"].get_group()
    for p in params:
        if p.grad is not None:
            g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
            dist.all_reduce(g, group=group)


def shard_data_parallel(model: GPTModel, cfg: TrainConfig, env: ParallelEnv) -> None:
    """FSDP2 per decoder layer and the root over the "dp" mesh dim, gradients summed."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype(cfg), reduce_dtype=torch.float32)
    dp_mesh = env.mesh["dp"]
    units = [*model.decoder.layers, model]
    for unit in units:
        fully_shard(unit, mesh=dp_mesh, mp_policy=policy)
    for unit in units:  # sum, not average: the loss is already normalised globally
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # gloo has no AVG / PREMUL_SUM


def local_megatron_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """This TP rank's full (DP-gathered) shards under megatron names, as a rank file holds.

    Collective over the dp group: every rank must call it.
    """
    from atelier.llm.train.checkpoint.shards import tp_local

    return {name: tp_local(p).cpu().clone() for name, p in model.named_parameters()}
