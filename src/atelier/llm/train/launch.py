"""Start the processes of a run: under torchrun, or spawning `nproc_per_node` local ones.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT set) the function runs in
this process. Otherwise `nproc_per_node` > 1 spawns that many processes on 127.0.0.1, which
meet through a store this process hosts, each running `fn(*args)`; rank 0's return value
comes back, and an AtelierError on any rank is re-raised here as the same one-line error
(never a wall of tracebacks).
The processes fork from a forkserver that imported torch once (see `_context`).
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

from atelier.core.atomic import current_umask
from atelier.core.errors import AtelierError
from atelier.llm.train.multinode import NodeSpec


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _worker(
    rank: int, env: dict[str, str], umask: int, fn: Callable, args: tuple, queue: Any
) -> None:
    """Local rank `rank`; `env` is the launcher's environment now plus the variables torchrun
    would set for it (a forkserver child would otherwise inherit the server's, from when
    it started), `umask` the launcher's."""
    os.environ.clear()
    os.environ.update(env)
    os.umask(umask)
    try:
        out = fn(*args)
        # Plain pickle bytes: torch's queue would share tensor storage that dies with us.
        queue.put((rank, "ok", pickle.dumps(out) if rank == 0 else None))
    except AtelierError as e:
        queue.put((rank, "error", str(e)))
    except BaseException:
        queue.put((rank, "crash", traceback.format_exc()))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launch(
    fn: Callable,
    args: tuple,
    nproc_per_node: int = 1,
    spawn: bool = False,
    node: NodeSpec | None = None,
) -> Any:
    """Run `fn(*args)` on every rank of this node and return local rank 0's result.

    One process runs in this one unless `spawn` (a fresh process, e.g. to measure its peak
    memory alone). `node` (more than one node, started without torchrun) gives the global
    ranks and the master; `nproc_per_node` is then `node.nproc_per_node`.
    """
    if node is not None and node.nnodes > 1 and not under_torchrun():
        return _launch_node(fn, args, node, spawn)
    if under_torchrun() or (nproc_per_node == 1 and not spawn):
        try:
            return fn(*args)
        finally:
            import torch.distributed as dist

            if dist.is_initialized() and not under_torchrun():
                dist.destroy_process_group()
    import torch.distributed as dist

    from atelier.llm.train.multinode import STORE_HOSTED

    # The rendezvous store lives here, on a port the kernel picks and this process keeps: a
    # port chosen here but bound by rank 0 only after it imported torch (seconds) could be
    # taken meanwhile by any other process binding port 0 on this machine.
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    local = NodeSpec(1, 0, nproc_per_node, "127.0.0.1", store.port)
    envs = [{**local.rank_env(r), STORE_HOSTED: "1"} for r in range(nproc_per_node)]
    try:
        return _spawn(fn, args, envs, fresh=spawn)
    finally:
        del store  # closed once every rank has gone


def _launch_node(fn: Callable, args: tuple, node: NodeSpec, spawn: bool) -> Any:
    """This node's ranks of a multi-node run: in this process when it is the only one."""
    envs = [node.rank_env(r) for r in range(node.nproc_per_node)]
    if node.nproc_per_node > 1 or spawn:
        return _spawn(fn, args, envs, fresh=spawn)
    saved = {k: os.environ.get(k) for k in envs[0]}
    os.environ.update(envs[0])
    try:
        return fn(*args)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Imported once by the forkserver; every rank forked from it starts with them loaded.
PRELOAD = ["torch", "torch.distributed"]


def _context(fresh: bool) -> Any:
    """Ranks fork from a forkserver that imported torch once (a spawned rank spends seconds
    importing it, each one, every launch); `fresh` (or no forkserver on this platform):
    plain spawn, a process owing nothing to another (peak-memory measurements)."""
    import multiprocessing

    import torch.multiprocessing as mp

    if fresh or "forkserver" not in multiprocessing.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _spawn(fn: Callable, args: tuple, envs: list[dict[str, str]], fresh: bool = False) -> Any:
    nproc_per_node = len(envs)
    ctx = _context(fresh)
    queue = ctx.SimpleQueue()
    umask = current_umask()
    procs = [
        ctx.Process(target=_worker, args=(r, {**os.environ, **envs[r]}, umask, fn, args, queue))
        for r in range(nproc_per_node)
    ]
    for p in procs:
        p.start()
    results: dict[int, tuple[str, Any]] = {}
    while len(results) < nproc_per_node:
        if queue.empty():
            # A rank that dies before reporting (killed, or failed while starting) would
            # leave the others waiting in a collective: stop them all.
            dead = [
                (r, p.exitcode)
                for r, p in enumerate(procs)
                if r not in results and p.exitcode not in (None, 0)
            ]
            if dead and queue.empty():
                results[dead[0][0]] = ("crash", f"rank {dead[0][0]} exited with {dead[0][1]}")
                break
            time.sleep(0.05)
            continue
        rank, status, value = queue.get()
        results[rank] = (status, value)
        if status != "ok":
            break
    for p in procs:
        p.join(timeout=30 if len(results) == nproc_per_node else 5)
        if p.is_alive():
            p.terminate()
            p.join()
    for status, value in results.values():
        if status == "error":
            raise AtelierError(value)
    for status, value in results.values():
        if status == "crash":
            raise RuntimeError(f"a training process failed:\n{value}")
    return pickle.loads(results[0][1])
