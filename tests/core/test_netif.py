"""core.netif: this machine's real interfaces, and the *_SOCKET_IFNAME rules on known ones."""

from __future__ import annotations

import pytest

from atelier.core import netif
from atelier.core.netif import Interface

LO = Interface("lo", 1, up=True, loopback=True, ipv4=("127.0.0.1",), ipv6=("::1",))
ETH0 = Interface("eth0", 2, up=True, loopback=False, ipv4=("10.0.0.5",))
ETH1 = Interface("eth1", 3, up=True, loopback=False, ipv4=("192.168.7.5",))
IB0 = Interface("ib0", 4, up=False, loopback=False, ipv4=("172.16.0.5",))
BARE = Interface("eth2", 5, up=True, loopback=False)
FAKE = [LO, ETH0, ETH1, IB0, BARE]


def test_this_machine_has_loopback_with_127_0_0_1() -> None:
    found = {i.name: i for i in netif.interfaces()}
    assert "lo" in found, found
    lo = found["lo"]
    assert lo.loopback and lo.up and "127.0.0.1" in lo.ipv4
    assert lo.describe().startswith("lo 127.0.0.1")
    assert all(i.index > 0 for i in found.values())


def test_loopback_routes_through_lo_and_sends_nothing() -> None:
    ifaces = netif.interfaces()
    assert netif.route_source("127.0.0.1") == "127.0.0.1"
    assert netif.route_interface("127.0.0.1", ifaces).name == "lo"
    # a host name is not resolved when resolving is not allowed (doctor: no DNS traffic)
    assert netif.route_source("localhost", resolve=False) is None


def test_wrong_name_on_this_machine_is_one_line_with_the_fix() -> None:
    report = netif.check_socket_ifnames(
        {"GLOO_SOCKET_IFNAME": "nosuchnic9"}, master_addr="127.0.0.1"
    )
    [problem] = report.problems
    msg = problem.message
    assert msg.startswith("GLOO_SOCKET_IFNAME=nosuchnic9: no such interface; this machine has ")
    assert "lo 127.0.0.1 (routes to MASTER_ADDR 127.0.0.1)" in msg
    assert "; export GLOO_SOCKET_IFNAME=" in msg and "\n" not in msg


@pytest.fixture
def routes_via_eth0(monkeypatch):
    monkeypatch.setattr(netif, "route_source", lambda host, port=29500, resolve=True: "10.0.0.5")


def test_message_names_every_nic_and_the_one_that_routes(routes_via_eth0) -> None:
    report = netif.check_socket_ifnames(
        {"GLOO_SOCKET_IFNAME": "eth9", "TP_SOCKET_IFNAME": "eth0"},
        master_addr="10.0.0.2",
        ifaces=FAKE,
    )
    assert [p.message for p in report.problems] == [
        "GLOO_SOCKET_IFNAME=eth9: no such interface; this machine has lo 127.0.0.1, "
        "eth0 10.0.0.5 (routes to MASTER_ADDR 10.0.0.2), eth1 192.168.7.5, "
        "ib0 172.16.0.5 (down), eth2 (no address); export GLOO_SOCKET_IFNAME=eth0"
    ]


@pytest.mark.parametrize(
    "env,needle",
    [
        (
            {"GLOO_SOCKET_IFNAME": "eth0,eth9"},
            "GLOO_SOCKET_IFNAME=eth0,eth9: no such interface eth9;",
        ),
        ({"GLOO_SOCKET_IFNAME": "eth2"}, "GLOO_SOCKET_IFNAME=eth2: eth2 has no IP address"),
        ({"TP_SOCKET_IFNAME": "ib0"}, "TP_SOCKET_IFNAME=ib0: ib0 is down;"),
        ({"NCCL_SOCKET_IFNAME": "enp"}, "NCCL_SOCKET_IFNAME=enp: matches no interface;"),
        ({"HCCL_SOCKET_IFNAME": "=eth"}, "HCCL_SOCKET_IFNAME==eth: matches no interface;"),
        ({"NCCL_SOCKET_IFNAME": "ib"}, "matches only ib0 172.16.0.5 (down): none is up"),
    ],
)
def test_each_kind_of_problem(routes_via_eth0, env, needle) -> None:
    report = netif.check_socket_ifnames(env, master_addr="10.0.0.2", ifaces=FAKE)
    assert len(report.problems) == 1 and needle in report.problems[0].message, report.problems
    assert report.problems[0].message.endswith(f"export {next(iter(env))}=eth0")


@pytest.mark.parametrize(
    "var,value,chosen",
    [
        ("GLOO_SOCKET_IFNAME", "eth0,eth1", ["eth0", "eth1"]),
        ("TP_SOCKET_IFNAME", "eth1", ["eth1"]),
        ("NCCL_SOCKET_IFNAME", "eth", ["eth0", "eth1", "eth2"]),  # prefixes
        ("NCCL_SOCKET_IFNAME", "=eth0,eth1", ["eth0", "eth1"]),  # exact names
        ("NCCL_SOCKET_IFNAME", "^eth,lo", ["ib0"]),  # exclusion
        ("HCCL_SOCKET_IFNAME", "^=eth0", ["lo", "eth1", "ib0", "eth2"]),
    ],
)
def test_selection_follows_each_library(var, value, chosen) -> None:
    assert [i.name for i in netif.select(var, value, FAKE)] == chosen


def test_good_values_pass_and_unset_notes_the_nic(routes_via_eth0) -> None:
    env = {"GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "^lo,docker"}
    report = netif.check_socket_ifnames(env, master_addr="10.0.0.2", ifaces=FAKE, backend="hccl")
    assert report.problems == []
    assert report.notes == [
        "HCCL_SOCKET_IFNAME is unset: hccl will use a NIC of its own choice; MASTER_ADDR "
        "10.0.0.2 is reached through eth0 10.0.0.5; export HCCL_SOCKET_IFNAME=eth0 to pin it"
    ]
    nccl = netif.check_socket_ifnames({}, master_addr="10.0.0.2", ifaces=FAKE, backend="nccl")
    assert nccl.notes[0].startswith(
        "NCCL_SOCKET_IFNAME is unset: nccl will use eth0 10.0.0.5 (NCCL's default order)"
    )
    # one NIC besides lo and gloo binding it: nothing to choose, nothing said
    one = netif.check_socket_ifnames({}, master_addr="10.0.0.2", ifaces=[LO, ETH0], backend="nccl")
    assert one.notes == [] and one.problems == []


def test_gloo_on_a_host_name_that_resolves_to_loopback_warns(routes_via_eth0, monkeypatch) -> None:
    """Debian's /etc/hosts maps the host name to 127.0.1.1: gloo then binds the loopback and
    the other nodes cannot connect (the guide's multi-node hang)."""
    monkeypatch.setattr(netif.socket, "gethostbyname", lambda name: "127.0.1.1")
    report = netif.check_socket_ifnames({}, master_addr="10.0.0.2", ifaces=FAKE, backend="gloo")
    [note] = report.notes
    assert note.startswith("warning: GLOO_SOCKET_IFNAME is unset: gloo will use lo 127.0.0.1 (")
    assert "resolves to 127.0.1.1" in note
    assert note.endswith("other nodes cannot reach the loopback; export GLOO_SOCKET_IFNAME=eth0")


def test_loopback_named_for_a_remote_master_is_a_warning(routes_via_eth0) -> None:
    report = netif.check_socket_ifnames(
        {"GLOO_SOCKET_IFNAME": "lo"}, master_addr="10.0.0.2", ifaces=FAKE
    )
    assert report.problems == []
    assert report.notes and "other nodes cannot connect" in report.notes[0]
    assert report.notes[0].endswith("export GLOO_SOCKET_IFNAME=eth0")
