"""Multi-node flags of `atelier llm train` / `run`: torchrun's spellings, the guide's variables.

`atelier llm train --nnodes 2 --node-rank 1 --master-addr 10.0.0.2 ...` on each node (or
NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE in the environment) starts
this node's ranks without torchrun; under torchrun these are torchrun's and are ignored here.
"""

from __future__ import annotations

import argparse

from atelier.core.flags import PORT, Float, Int

DIST_TIMEOUT = Float(0, 1440, lo_open=True)


def add_node_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--nnodes", type=Int(1, 65536), default=None, help="machines in the run [env NNODES]"
    )
    g.add_argument(
        "--node-rank",
        "--node_rank",
        type=Int(0, 65535),
        default=None,
        help="this machine's index, 0 on the master [env NODE_RANK]",
    )
    g.add_argument(
        "--master-addr",
        "--master_addr",
        default=None,
        help="address of node 0 that every node reaches [env MASTER_ADDR]",
    )
    g.add_argument(
        "--master-port",
        "--master_port",
        type=PORT,
        default=None,
        help="rendezvous port on node 0 (default 29500) [env MASTER_PORT]",
    )
    g.add_argument(
        "--dist-timeout",
        type=DIST_TIMEOUT,
        default=None,
        help="minutes (fractions allowed) the rendezvous and process-group start may take; "
        "overrides --distributed-timeout-minutes",
    )


def node_from_args(args: argparse.Namespace):
    """The NodeSpec of this node (None under torchrun, which owns these settings); the
    `*_SOCKET_IFNAME` variables are checked here first."""
    from atelier.llm.train.launch import under_torchrun
    from atelier.llm.train.multinode import check_network, node_spec

    check_network(None)  # a wrong NIC name is one line before any work (again in each rank)
    if under_torchrun():
        return None
    return node_spec(
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        nproc_per_node=args.nproc_per_node,
    )


def dist_timeout(args: argparse.Namespace) -> float:
    return args.dist_timeout if args.dist_timeout is not None else args.distributed_timeout_minutes
