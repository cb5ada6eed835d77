"""This machine's network interfaces, and the `*_SOCKET_IFNAME` variables checked against them.

A multi-node run that names a NIC this machine does not have dies deep inside gloo ("Unable
to find address for: eth9") or hangs in HCCL; the guide's troubleshooting page is about
exactly that. Everything here is stdlib (no torch) and local: addresses come from ioctl and
/proc, and "which interface routes to MASTER_ADDR" connects a UDP socket, which only asks the
kernel's routing table and sends no packet.

Variable syntax, as each library reads it:
- `GLOO_SOCKET_IFNAME`: exact names, comma-separated (torch opens one gloo device per name);
- `TP_SOCKET_IFNAME` (tensorpipe): one exact name;
- `NCCL_SOCKET_IFNAME`, `HCCL_SOCKET_IFNAME`: comma-separated name prefixes, `=` in front for
  exact names, `^` in front to exclude the listed ones instead.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SOCKET_IFNAME_VARS = (
    "GLOO_SOCKET_IFNAME",
    "TP_SOCKET_IFNAME",
    "HCCL_SOCKET_IFNAME",
    "NCCL_SOCKET_IFNAME",
)
PREFIX_SYNTAX = ("HCCL_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
# The variable each collective backend reads for its own sockets.
BACKEND_VAR = {
    "gloo": "GLOO_SOCKET_IFNAME",
    "nccl": "NCCL_SOCKET_IFNAME",
    "hccl": "HCCL_SOCKET_IFNAME",
}

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    up: bool
    loopback: bool
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ipv4 + self.ipv6

    def describe(self) -> str:
        """`eth0 10.0.0.5`, `eth1 (down, no address)`, `eth2 10.1.0.3 (down)`."""
        addr = self.ipv4[0] if self.ipv4 else self.ipv6[0] if self.ipv6 else ""
        state = ", ".join(([] if self.up else ["down"]) + ([] if addr else ["no address"]))
        return " ".join(x for x in (self.name, addr, f"({state})" if state else "") if x)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "index": self.index,
            "up": self.up,
            "loopback": self.loopback,
            "ipv4": list(self.ipv4),
            "ipv6": list(self.ipv6),
        }


def _ioctl(sock: socket.socket, request: int, name: str, size: int) -> bytes | None:
    import fcntl

    try:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))[:size]
    except OSError:  # EADDRNOTAVAIL: no IPv4 address; ENODEV: gone meanwhile
        return None


def _ipv6_by_name() -> dict[str, list[str]]:
    """/proc/net/if_inet6: `hexaddr ifindex prefixlen scope flags name`, global ones first."""
    out: dict[str, list[tuple[int, str]]] = {}
    try:
        text = Path("/proc/net/if_inet6").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        addr = str(ipaddress.IPv6Address(int(parts[0], 16)))
        out.setdefault(parts[5], []).append((int(parts[3], 16), addr))  # scope 0 = global
    return {name: [a for _, a in sorted(v)] for name, v in out.items()}


def interfaces() -> list[Interface]:
    """Every interface of this machine with its flags and addresses, in index order."""
    try:
        names = sorted(socket.if_nameindex())
    except (OSError, AttributeError):
        return []
    v6 = _ipv6_by_name()
    out: list[Interface] = []
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        sock = None
    try:
        for index, name in names:
            flags, ipv4 = 0, ()
            if sock is not None and os.name == "posix":
                raw = _ioctl(sock, _SIOCGIFFLAGS, name, 18)
                flags = struct.unpack("H", raw[16:18])[0] if raw else 0
                raw = _ioctl(sock, _SIOCGIFADDR, name, 24)
                ipv4 = (socket.inet_ntoa(raw[20:24]),) if raw else ()
            out.append(
                Interface(
                    name=name,
                    index=index,
                    up=bool(flags & _IFF_UP),
                    loopback=bool(flags & _IFF_LOOPBACK) or name == "lo",
                    ipv4=ipv4,
                    ipv6=tuple(v6.get(name, ())),
                )
            )
    finally:
        if sock is not None:
            sock.close()
    return out


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def route_source(host: str, port: int = 29500, resolve: bool = True) -> str | None:
    """The local address the kernel would use to reach `host`, or None.

    connect() on a UDP socket only picks the route and source address; nothing is sent.
    A host name is resolved only when `resolve` (that may ask a DNS server).
    """
    if not is_ip_literal(host) and not resolve:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.connect(addr)
                return str(s.getsockname()[0])
        except OSError:  # network unreachable from here
            continue
    return None


def owner(address: str | None, ifaces: Sequence[Interface]) -> Interface | None:
    if address is None:
        return None
    address = address.split("%", 1)[0]
    for iface in ifaces:
        if address in iface.addresses:
            return iface
    if address.startswith("127."):  # any 127/8 address is the loopback interface's
        return next((i for i in ifaces if i.loopback), None)
    return None


def route_interface(
    host: str, ifaces: Sequence[Interface], port: int = 29500, resolve: bool = True
) -> Interface | None:
    """The interface traffic to `host` leaves by (lo for this machine's own addresses)."""
    return owner(route_source(host, port, resolve), ifaces)


def select(var: str, value: str, ifaces: Sequence[Interface]) -> list[Interface]:
    """The interfaces a library picks for `var=value` (syntax in the module docstring)."""
    text = value.strip()
    if var not in PREFIX_SYNTAX:
        wanted = [n.strip() for n in text.split(",")] if var == "GLOO_SOCKET_IFNAME" else [text]
        by_name = {i.name: i for i in ifaces}
        return [by_name[n] for n in wanted if n in by_name]
    exclude = text.startswith("^")
    text = text.removeprefix("^")
    exact = text.startswith("=")
    text = text.removeprefix("=")
    parts = [p.strip() for p in text.split(",") if p.strip()]

    def hit(name: str) -> bool:
        return any(name == p if exact else name.startswith(p) for p in parts)

    return [i for i in ifaces if hit(i.name) != exclude]


@dataclass
class NicProblem:
    var: str
    value: str
    message: str  # the whole one line, fix included


@dataclass
class NicReport:
    """What `check_socket_ifnames` found: problems (errors) and notes (informational)."""

    interfaces: list[Interface]
    master_addr: str | None = None
    master_route: Interface | None = None
    problems: list[NicProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def listing(self) -> str:
        """`lo 127.0.0.1, eth0 10.0.0.5 (routes to MASTER_ADDR 10.0.0.2)`."""
        parts = []
        for i in self.interfaces:
            text = i.describe()
            if self.master_route is not None and i.name == self.master_route.name:
                text += f" (routes to MASTER_ADDR {self.master_addr})"
            parts.append(text)
        return ", ".join(parts) or "no interface"

    def suggestion(self) -> str | None:
        """The NIC to name: the one that routes to MASTER_ADDR, else the first usable
        non-loopback one, else the loopback."""
        if self.master_route is not None and self.master_route.addresses:
            return self.master_route.name
        usable = [i for i in self.interfaces if i.up and i.addresses]
        outside = [i for i in usable if not i.loopback]
        pick = outside or usable
        return pick[0].name if pick else None


def _problem(report: NicReport, var: str, value: str, what: str) -> NicProblem:
    fix = report.suggestion()
    tail = f"; export {var}={fix}" if fix else ""
    return NicProblem(
        var, value, f"{var}={value}: {what}; this machine has {report.listing()}{tail}"
    )


def check_socket_ifnames(
    environ: Mapping[str, str] | None = None,
    master_addr: str | None = None,
    ifaces: Sequence[Interface] | None = None,
    resolve: bool = True,
    backend: str | None = None,
) -> NicReport:
    """Check every set `*_SOCKET_IFNAME` against this machine; note the NIC used when unset.

    `master_addr` (default MASTER_ADDR) is the rendezvous host; `resolve` allows a DNS
    look-up of a host name (doctor passes False: it sends nothing off the machine).
    `backend` (gloo/nccl/hccl) says whose default choice to note when its variable is unset.
    """
    env = os.environ if environ is None else environ
    ifaces = list(interfaces() if ifaces is None else ifaces)
    master = master_addr if master_addr is not None else env.get("MASTER_ADDR") or None
    report = NicReport(interfaces=ifaces, master_addr=master)
    if master:
        report.master_route = route_interface(master, ifaces, resolve=resolve)
    for var in SOCKET_IFNAME_VARS:
        value = env.get(var)
        if value is None or not value.strip():
            continue
        chosen = select(var, value, ifaces)
        if var in PREFIX_SYNTAX:
            if not chosen:
                report.problems.append(_problem(report, var, value, "matches no interface"))
            elif not any(i.up and i.addresses for i in chosen):
                names = ", ".join(i.describe() for i in chosen)
                report.problems.append(
                    _problem(
                        report, var, value, f"matches only {names}: none is up with an address"
                    )
                )
            continue
        names = [n.strip() for n in value.split(",")] if var == "GLOO_SOCKET_IFNAME" else [value]
        have = {i.name: i for i in chosen}
        for name in names:
            iface = have.get(name)
            if iface is None:
                what = "no such interface" if len(names) == 1 else f"no such interface {name}"
            elif not iface.addresses:
                what = f"{name} has no IP address (gloo: 'Unable to find address')"
            elif not iface.up:
                what = f"{name} is down"
            else:
                continue
            report.problems.append(_problem(report, var, value, what))
            break
        else:
            _note_mismatch(report, var, value, chosen)
    if backend is not None and not (env.get(BACKEND_VAR.get(backend, "")) or "").strip():
        _note_default(report, backend, resolve)
    return report


def _note_mismatch(report: NicReport, var: str, value: str, chosen: list[Interface]) -> None:
    route = report.master_route
    if route is None or route.loopback or any(i.name == route.name for i in chosen):
        return
    if all(i.loopback for i in chosen):
        report.notes.append(
            f"warning: {var}={value} is the loopback interface, but MASTER_ADDR "
            f"{report.master_addr} is reached through {route.describe()}: other nodes cannot "
            f"connect to it; export {var}={route.name}"
        )


def default_interface(
    backend: str, ifaces: Sequence[Interface], resolve: bool = True
) -> tuple[Interface | None, str]:
    """The NIC `backend` binds with its variable unset, and why; (None, "") if unknown.

    gloo (torch's default device) binds the address this host's name resolves to, the
    loopback when that fails; NCCL takes an `ib*` interface first, else the first one that is
    neither `lo` nor `docker*`. HCCL's own rule is not documented: unknown.
    """
    usable = [i for i in ifaces if i.up and i.addresses]
    if backend == "gloo":
        host = socket.gethostname()
        if not resolve:
            return None, ""
        try:
            address = socket.gethostbyname(host)
        except OSError:
            return next((i for i in usable if i.loopback), None), f"host name {host} unresolved"
        return owner(address, usable), f"{host} resolves to {address}"
    if backend == "nccl":
        ib = [i for i in usable if i.name.startswith("ib")]
        rest = [i for i in usable if not i.name.startswith(("docker", "lo"))]
        pick = ib or rest
        return (pick[0], "NCCL's default order") if pick else (None, "")
    return None, ""


def _note_default(report: NicReport, backend: str, resolve: bool) -> None:
    """Which NIC the backend will use with its variable unset, when there is a choice."""
    var = BACKEND_VAR[backend]
    outside = [i for i in report.interfaces if not i.loopback and i.up and i.addresses]
    route = report.master_route
    remote = route is not None and not route.loopback
    if len(outside) < 2 and not remote:
        return
    used, why = default_interface(backend, report.interfaces, resolve)
    said = f"{used.describe()} ({why})" if used is not None else "a NIC of its own choice"
    text = f"{var} is unset: {backend} will use {said}"
    if route is not None:
        text += f"; MASTER_ADDR {report.master_addr} is reached through {route.describe()}"
    if remote and used is not None and used.loopback:
        report.notes.append(
            f"warning: {text}: other nodes cannot reach the loopback; export {var}={route.name}"
        )
    elif len(outside) >= 2:
        fix = route.name if remote else "NAME"
        report.notes.append(f"{text}; export {var}={fix} to pin it")


def nic_for_log(report: NicReport, backend: str, environ: Mapping[str, str]) -> str:
    """`eth0 10.0.0.5` for a rank's start-up line: the named NIC, else the route."""
    value = (environ.get(BACKEND_VAR.get(backend, "")) or "").strip()
    if value:
        chosen = select(BACKEND_VAR[backend], value, report.interfaces)
        return ", ".join(i.describe() for i in chosen) + f" ({BACKEND_VAR[backend]})"
    if report.master_route is not None:
        return f"{report.master_route.describe()} (route to MASTER_ADDR)"
    return "default"
