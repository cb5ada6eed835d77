"""Start the processes of a run: under torchrun, or spawning `nproc_per_node` local ones.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT set) the function runs in
this process. Otherwise `nproc_per_node` > 1 spawns that many processes on 127.0.0.1 with a
free port, each running `fn(*args)`; rank 0's return value comes back, and an AtelierError
on any rank is re-raised here as the same one-line error (never a wall of tracebacks).
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

from atelier.core.errors import AtelierError


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _worker(rank: int, nprocs: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
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


def launch(fn: Callable, args: tuple, nproc_per_node: int = 1, spawn: bool = False) -> Any:
    """Run `fn(*args)` on every rank and return rank 0's result.

    One process runs in this one unless `spawn` (a fresh process, e.g. to measure its peak
    memory alone).
    """
    if under_torchrun() or (nproc_per_node == 1 and not spawn):
        try:
            return fn(*args)
        finally:
            import torch.distributed as dist

            if dist.is_initialized() and not under_torchrun():
                dist.destroy_process_group()
    import torch.multiprocessing as mp

    from atelier.llm.train.parallelize import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, nproc_per_node, port, fn, args, queue))
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
