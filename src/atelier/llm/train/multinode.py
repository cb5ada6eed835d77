"""Several machines in one run: which node this is, the rendezvous, the NIC check.

Two ways to start a multi-node run, as the platform guide does:
- `torchrun --nnodes N --node-rank R --master-addr A --master-port P atelier ...` (or
  `--rdzv-backend c10d --rdzv-endpoint A:P`): torchrun's agents meet first, then each rank
  joins the process group through the agent's store;
- Atelier alone on every node, with torchrun's flags (`--nnodes --node-rank --master-addr
  --master-port --nproc-per-node`) or the guide's variables (NNODES, NODE_RANK, MASTER_ADDR,
  MASTER_PORT, NPROC_PER_NODE / NPUS_PER_NODE / GPUS_PER_NODE): `launch` starts the local
  ranks and `join_process_group` runs the rendezvous itself, so one that does not complete
  within `--dist-timeout` ends every rank with one line saying which ranks were missing.

In both, every set `*_SOCKET_IFNAME` is checked against this machine before any socket is
opened (`core.netif`), and each rank prints one line: node, ranks, device, NIC.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from atelier.core import netif
from atelier.core.errors import AtelierError
from atelier.core.flags import Int

DEFAULT_PORT = 29500  # torchrun's
# Set by `launch` for ranks it spawned on one node: it already hosts the rendezvous store on
# MASTER_PORT, so rank 0 connects to it like the others instead of listening there.
STORE_HOSTED = "ATELIER_RDZV_STORE_HOSTED"
NPROC_VARS = ("NPROC_PER_NODE", "NPUS_PER_NODE", "GPUS_PER_NODE")


@dataclass(frozen=True)
class NodeSpec:
    """This node's place in a run started by Atelier itself (not torchrun)."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int = DEFAULT_PORT

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def rank_env(self, local_rank: int) -> dict[str, str]:
        """The variables torchrun would give local rank `local_rank` of this node."""
        return {
            "RANK": str(self.node_rank * self.nproc_per_node + local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.nproc_per_node),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def _value(given: Any, var_names: tuple[str, ...], env: Mapping[str, str], kind: Any) -> Any:
    if given is not None:
        return given
    for var in var_names:
        text = env.get(var, "").strip()
        if text:
            try:
                return kind(text)
            except Exception as e:  # argparse.ArgumentTypeError from core.flags
                raise AtelierError(f"{var}={text!r}: {e}") from None
    return None


def node_spec(
    nnodes: int | None = None,
    node_rank: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    nproc_per_node: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> NodeSpec:
    """Flags first, then the guide's variables; errors name the flag (the CLI's spelling)."""
    env = os.environ if environ is None else environ
    n = _value(nnodes, ("NNODES",), env, Int(1, 65536)) or 1
    rank = _value(node_rank, ("NODE_RANK",), env, Int(0, 65535)) or 0
    nproc = _value(nproc_per_node, NPROC_VARS, env, Int(1, 1024)) or 1
    port = _value(master_port, ("MASTER_PORT",), env, Int(1, 65535)) or DEFAULT_PORT
    addr = master_addr or env.get("MASTER_ADDR", "").strip() or None
    if rank >= n:
        raise AtelierError(
            f"--node-rank {rank} (NODE_RANK) is not below --nnodes {n}: node ranks are 0 to {n - 1}"
        )
    if n > 1 and addr is None:
        raise AtelierError(
            f"--nnodes {n}: give --master-addr (or MASTER_ADDR), the address of node 0 that "
            "every node can reach"
        )
    return NodeSpec(n, rank, nproc, addr or "127.0.0.1", port)


# --- the NIC check and the start-up line ------------------------------------------------------


def check_network(backend: str | None, environ: Mapping[str, str] | None = None) -> netif.NicReport:
    """Raise the first `*_SOCKET_IFNAME` problem as one line; return the report otherwise.

    Every set variable is checked whatever the backend (the guide sets them all to the same
    NIC, and a name this machine lacks is a mistake in any case); `backend` only decides
    whose default choice is noted."""
    env = os.environ if environ is None else environ
    report = netif.check_socket_ifnames(env, backend=backend)
    if report.problems:
        raise AtelierError(report.problems[0].message)
    return report


def _node_rank(env: Mapping[str, str]) -> int:
    for var in ("NODE_RANK", "GROUP_RANK"):
        if env.get(var, "").isdigit():
            return int(env[var])
    local_world = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    return int(env.get("RANK", "0")) // max(local_world, 1)


def rank_line(device: str, backend: str, report: netif.NicReport, env: Mapping[str, str]) -> str:
    """`rank 1/2 (local 0/1) on node 1 (host a1): device cpu, gloo via eth0 10.0.0.5 ...`."""
    rank, world = env.get("RANK", "0"), env.get("WORLD_SIZE", "1")
    local, local_world = env.get("LOCAL_RANK", "0"), env.get("LOCAL_WORLD_SIZE", "1")
    master = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    return (
        f"atelier: rank {rank}/{world} (local {local}/{local_world}) on node {_node_rank(env)} "
        f"(host {socket.gethostname()}): device {device}, {backend} via "
        f"{netif.nic_for_log(report, backend, env)}, master {master}"
    )


# --- the rendezvous -----------------------------------------------------------------------


def _span(timeout: datetime.timedelta) -> str:
    seconds = timeout.total_seconds()
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


def _ranks_text(ranks: list[int], local_world: int) -> str:
    shown = ", ".join(f"{r} (node {r // local_world})" for r in ranks[:8])
    return shown + (f" and {len(ranks) - 8} more" if len(ranks) > 8 else "")


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """c10d's C++ side logs every connection retry with a native stack trace to fd 2; while
    the rendezvous runs those lines are noise (its outcome is reported in one line)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _NoAnswer(Exception):
    """`_bounded`'s call did not return in time."""


def _bounded(make: Callable[[], Any], seconds: float) -> Any:
    """`make()`, or _NoAnswer after `seconds`. A TCPStore client whose port is held by
    a program that accepts but never answers (another job's gloo listener, a stopped
    process) waits for the store's greeting forever, whatever its timeout; the call is
    left behind in a daemon thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = make()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    thread = threading.Thread(target=run, name="atelier-rendezvous", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _NoAnswer(seconds)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _own_rendezvous(env: Mapping[str, str], timeout: datetime.timedelta) -> Any:
    """A TCPStore on MASTER_ADDR:MASTER_PORT where every rank checks in by name.

    Rank 0 hosts it (unless the launcher does: STORE_HOSTED); the others connect (retrying
    until the deadline). Then every rank
    waits for all check-ins, so a missing node ends each rank with the list of who is
    missing rather than a hang in the first collective.
    """
    import torch.distributed as dist

    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_world = max(int(env.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    addr, port = env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", DEFAULT_PORT))
    where = f"MASTER_ADDR {addr}:{port}"
    same = (
        f"start every node with the same --nnodes {world // local_world}, --master-addr {addr} "
        f"and --master-port {port} (each with its own --node-rank)"
    )
    start = time.monotonic()
    host_it = rank == 0 and env.get(STORE_HOSTED) != "1"
    try:
        with _quiet_native_stderr():
            store = _bounded(
                lambda: dist.TCPStore(
                    addr, port, world, is_master=host_it, timeout=timeout, wait_for_workers=False
                ),
                2 * timeout.total_seconds() + 10,  # the timeout plus one retry interval
            )
    except _NoAnswer:
        raise AtelierError(
            f"rendezvous: rank {rank} (node {rank // local_world}) reached {where} but "
            f"nothing there answered as a rendezvous store within {_span(timeout)}: another "
            f"program listens on port {port} of {addr}; {same}, with a --master-port that "
            "nothing else uses"
        ) from None
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if host_it:
            raise AtelierError(
                f"rendezvous: cannot listen on {where} on this node ({first}); the port may be "
                "in use by another run: choose a free --master-port (MASTER_PORT) on every node"
            ) from None
        raise AtelierError(
            f"rendezvous: rank {rank} (node {rank // local_world}) could not reach {where} "
            f"within {_span(timeout)}: node 0 was not started, listens elsewhere, or a "
            f"firewall blocks port {port}; {same}, or raise --dist-timeout"
        ) from None
    host = socket.gethostname()
    store.set(f"atelier/joined/{rank}", json.dumps({"host": host, "node": rank // local_world}))
    keys = [f"atelier/joined/{r}" for r in range(world)]
    left = timeout - datetime.timedelta(seconds=time.monotonic() - start)
    try:
        with _quiet_native_stderr():
            store.wait(keys, max(left, datetime.timedelta(seconds=1)))
    except (RuntimeError, OSError):
        try:
            with _quiet_native_stderr():
                missing = [r for r in range(world) if not store.check([keys[r]])]
        except (RuntimeError, OSError):  # the master itself went away
            missing = []
        who = (
            f"{world - len(missing)} of {world} ranks joined; missing ranks "
            f"{_ranks_text(missing, local_world)}"
            if missing
            else "the master node went away"
        )
        raise AtelierError(
            f"rendezvous at {where} did not complete within {_span(timeout)}: {who}; {same}, "
            f"check that port {port} of {addr} is reachable from every node and the "
            "*_SOCKET_IFNAME variables (atelier doctor), or raise --dist-timeout"
        ) from None
    return store


def check_master_is_here(addr: str, report: netif.NicReport) -> None:
    """Rank 0 hosts the rendezvous, so MASTER_ADDR must be one of this machine's addresses."""
    try:
        infos = socket.getaddrinfo(addr, None)
    except (OSError, UnicodeError):
        raise AtelierError(
            f"--master-addr {addr} (MASTER_ADDR): the name does not resolve on node 0; give "
            "node 0's IP address"
        ) from None
    ips = {str(info[4][0]).split("%", 1)[0] for info in infos}
    if any(netif.owner(ip, report.interfaces) is not None or ip == "::1" for ip in ips):
        return
    raise AtelierError(
        f"--master-addr {addr} (MASTER_ADDR) is not an address of this machine, which is node 0 "
        f"and hosts the rendezvous; this machine has {report.listing()}: give node 0's own "
        "address on every node (or run this node with its own --node-rank)"
    )


def join_process_group(backend: str, timeout_minutes: float, device: str) -> None:
    """Check the NICs, then start or join the process group (bounded by the timeout)."""
    import torch.distributed as dist

    env = os.environ
    report = check_network(backend, env)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if "RANK" not in env:  # one process of its own (the environment is left untouched)
        # its store on a port the kernel picks and keeps (no chosen-then-bound window)
        store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
        return
    if env.get("LOCAL_RANK", "0") == "0":
        for note in report.notes:
            print(f"atelier: {note}", file=sys.stderr, flush=True)
    print(rank_line(device, backend, report, env), file=sys.stderr, flush=True)
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    try:
        if "TORCHELASTIC_RUN_ID" in env:  # torchrun: its agents already met; use their store
            dist.init_process_group(backend, timeout=timeout)
        else:
            if rank == 0:
                check_master_is_here(env.get("MASTER_ADDR", "127.0.0.1"), report)
            store = _own_rendezvous(env, timeout)
            dist.init_process_group(
                backend,
                store=dist.PrefixStore("atelier/pg", store),
                rank=rank,
                world_size=world,
                timeout=timeout,
            )
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AtelierError(
            f"the {backend} process group of {world} ranks did not form within "
            f"{_span(timeout)} ({first[:300]}); each pair of ranks connects over the NIC each "
            f"one advertises: check {netif.BACKEND_VAR.get(backend, 'the *_SOCKET_IFNAME')} on "
            "every node (atelier doctor) and that no firewall blocks the ports between nodes"
        ) from None
