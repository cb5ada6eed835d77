"""Interfaces with their addresses, the *_SOCKET_IFNAME variables, net.ipv4.ip_forward.

Only local facts: MASTER_ADDR is routed (a UDP connect() picks a route and sends nothing)
when it is an address; a host name is not resolved, since that could ask a DNS server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from atelier.core import netif
from atelier.doctor.findings import Report


def check(report: Report, environ: Mapping[str, str] | None = None, backend: str = "gloo") -> None:
    env = os.environ if environ is None else environ
    nic = netif.check_socket_ifnames(env, resolve=False, backend=backend)
    report.facts["network"] = {
        "interfaces": [i.as_dict() for i in nic.interfaces],
        "master_addr": nic.master_addr,
        "master_route": nic.master_route.name if nic.master_route else None,
        "socket_ifname": {v: env[v] for v in netif.SOCKET_IFNAME_VARS if v in env},
    }
    listing = nic.listing()
    report.add("network", "ok" if nic.interfaces else "warn", f"interfaces: {listing}")
    master = nic.master_addr
    if master and nic.master_route is None:
        why = (
            "it is a host name (not resolved: doctor sends nothing off this machine)"
            if not netif.is_ip_literal(master)
            else "no interface routes to it"
        )
        report.add(
            "network", "info" if "host name" in why else "warn", f"MASTER_ADDR {master}: {why}"
        )
    for problem in nic.problems:
        report.add("network", "fail", problem.message)
    for note in nic.notes:
        status = "warn" if note.startswith("warning: ") else "info"
        report.add("network", status, note.removeprefix("warning: "))
    _ip_forward(report)


def _ip_forward(report: Report, proc: Path = Path("/proc/sys/net/ipv4/ip_forward")) -> None:
    from atelier.doctor.system import container_kind

    try:
        value = proc.read_text().strip()
    except OSError:
        return
    report.facts["network"]["ip_forward"] = value
    if value == "1":
        report.add("network", "ok", "net.ipv4.ip_forward = 1")
    elif container_kind():
        report.add(
            "network",
            "info",
            "net.ipv4.ip_forward = 0 inside this container (the host's setting is what matters "
            "for container networking)",
        )
    else:
        report.add(
            "network",
            "warn",
            "net.ipv4.ip_forward = 0: Docker containers get no network; sysctl -w "
            "net.ipv4.ip_forward=1 (and net.ipv4.ip_forward = 1 in /etc/sysctl.conf)",
        )
