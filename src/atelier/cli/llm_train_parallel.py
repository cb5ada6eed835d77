"""Parallelism and execution flags of `atelier llm train` / `run`: TP, PP, processes, device.

Tensor and pipeline parallel sizes (the guide's TP / PP fill them), the pipeline layout
(`--num-layer-list`, as hf2mg's), local processes, the node flags of a run started without
torchrun (`llm_train_dist.add_node_flags`), recomputation and kernels: what decides where
and how the model runs, apart from what it learns (`llm_train_schedule`).
"""

from __future__ import annotations

import argparse
from typing import Any

from atelier.cli.llm_train_dist import add_node_flags, dist_timeout
from atelier.core.flags import NON_NEGATIVE_INT, POSITIVE_INT, Int


def add_parallel_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parallelism and execution")
    g.add_argument("--tensor-model-parallel-size", type=Int(1, 1024), default=None, help="[env TP]")
    g.add_argument(
        "--pipeline-model-parallel-size",
        type=Int(1, 1024),
        default=None,
        help="pipeline stages (1F1B over torch.distributed.pipelining) [env PP]",
    )
    g.add_argument(
        "--num-layer-list",
        default=None,
        help="layers per pipeline stage, e.g. 1,2 (uneven allowed; as hf2mg's)",
    )
    g.add_argument(
        "--num-layers-per-virtual-pipeline-stage",
        type=POSITIVE_INT,
        default=None,
        help="interleaved pipeline schedule: not supported (refused)",
    )
    g.add_argument("--pipeline-schedule", choices=["1f1b", "gpipe"], default="1f1b")
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument(
        "--nproc-per-node",
        "--nproc_per_node",
        type=Int(1, 1024),
        default=None,
        help="spawn this many local processes (not needed under torchrun) "
        "[env NPROC_PER_NODE, NPUS_PER_NODE, GPUS_PER_NODE]",
    )
    g.add_argument("--distributed-timeout-minutes", type=Int(1, 1440), default=10)
    add_node_flags(g)
    g.add_argument("--device", default="auto", help="auto (cuda > npu > cpu) | cpu | cuda | npu")
    g.add_argument("--recompute-granularity", choices=["full", "selective"], default=None)
    g.add_argument("--recompute-method", choices=["uniform", "block"], default="uniform")
    g.add_argument("--recompute-num-layers", type=POSITIVE_INT, default=None)
    g.add_argument("--use-flash-attn", action="store_true", help="flash attention kernels")
    g.add_argument("--compile", action="store_true", help="torch.compile each layer")
    g.add_argument(
        "--local-rank", "--local_rank", type=NON_NEGATIVE_INT, default=None, help=argparse.SUPPRESS
    )  # torch.distributed.launch passes it; LOCAL_RANK wins


def parallel_fields(args: argparse.Namespace, values: dict[str, Any], node: Any) -> dict[str, Any]:
    """TrainConfig fields of this group; `values`: the flags after `apply_env`, `node`: this
    node's NodeSpec (None under torchrun or on one machine)."""
    return {
        "tensor_model_parallel_size": values["tensor_model_parallel_size"] or 1,
        "pipeline_model_parallel_size": values["pipeline_model_parallel_size"] or 1,
        **_pipeline_fields(args),
        "sequence_parallel": args.sequence_parallel,
        "nproc_per_node": node.nproc_per_node if node else args.nproc_per_node or 1,
        "distributed_timeout_minutes": dist_timeout(args),
        "device": args.device,
        "recompute_granularity": args.recompute_granularity,
        "recompute_method": args.recompute_method,
        "recompute_num_layers": args.recompute_num_layers,
        "use_flash_attn": args.use_flash_attn,
        "compile": args.compile,
    }


def _pipeline_fields(args: argparse.Namespace) -> dict:
    from atelier.cli.llm_convert import _layer_list

    return {
        "num_layer_list": _layer_list(args.num_layer_list),
        "num_layers_per_virtual_pipeline_stage": args.num_layers_per_virtual_pipeline_stage,
        "pipeline_schedule": args.pipeline_schedule,
    }
