"""Ports for test listeners that bind seconds after the port is chosen (torch.distributed)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path


def listen_port(other_than: int | None = None) -> int:
    """A free port for a listener that a launcher binds seconds after it is chosen.

    A bind to port 0 returns a port of the kernel's ephemeral range, free again at once: until
    torchrun's agent 0 (or Atelier's rank 0) binds it, after importing torch, any bind to
    port 0 on the machine -- another xdist worker's TCPStore or gloo listener -- may get it.
    Agent 0 then fails with EADDRINUSE while agent 1 joins the other process's store and
    waits there for the 15 min rendezvous timeout (the hang seen under `pytest -n 2`).
    The kernel never hands out ports below the ephemeral range; each xdist worker draws
    from its own residue class so two workers cannot pick the same one."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or 0) % 8
    taken = range(29500, 30700)  # MASTER_PORT 29500/29700 + pid % 1000 in tests/llm/convert
    ports = [p for p in range(max(1024, low - 12000), low) if p % 8 == worker and p not in taken]
    for port in random.sample(ports, min(len(ports), 50)):
        if port == other_than:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # the store listens on every address
            except OSError:
                continue
        return port
    with socket.socket() as s:  # no room below the ephemeral range on this machine
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
