"""The netns NIC plan: the engine's interface found from `ip -j` output, the tc wiring."""

from __future__ import annotations

import json

import pytest

from steelcup.errors import InvalidArgument
from steelcup.net.netnsnic import (
    READ_BATCH,
    NetnsInterface,
    NetnsWiring,
    find_interface,
    netns_link_batch,
    tap_name,
    tc_unwire_batch,
    tc_wire_batch,
)

LO = {"ifname": "lo", "link_type": "loopback", "mtu": 65536, "address": "00:00:00:00:00:00",
      "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]}


def _link(name: str, mac: str, addr: str | None, prefix: int = 16, mtu: int = 1500) -> dict:
    info = [{"family": "inet6", "local": "fe80::1", "prefixlen": 64}]
    if addr:
        info.insert(0, {"family": "inet", "local": addr, "prefixlen": prefix})
    return {"ifname": name, "link_type": "ether", "mtu": mtu, "address": mac,
            "addr_info": info}


def test_the_interface_of_the_default_route_with_its_mac_address_mtu_and_gateway() -> None:
    addrs = json.dumps([LO, _link("eth1", "aa:00:00:00:00:01", "10.1.0.2", 24),
                        _link("eth0", "2E:6E:70:D6:73:B2", "10.88.0.5", 16, mtu=1450)])
    routes = json.dumps([{"dst": "default", "gateway": "10.88.0.1", "dev": "eth0"},
                         {"dst": "10.88.0.0/16", "dev": "eth0"}])
    # as `ip -j -batch -` prints them: one document per line
    assert find_interface(f"{addrs}\n{routes}\n") == NetnsInterface(
        name="eth0", mac="2e:6e:70:d6:73:b2", mtu=1450, address="10.88.0.5", prefix=16,
        gateway="10.88.0.1")


def test_without_a_default_route_the_first_interface_with_an_ipv4_address() -> None:
    addrs = json.dumps([LO, _link("v6only", "aa:00:00:00:00:09", None),
                        _link("net1", "aa:00:00:00:00:02", "192.168.5.9", 24)])
    iface = find_interface(addrs + "[]")
    assert iface is not None
    assert (iface.name, iface.address, iface.prefix, iface.gateway) == (
        "net1", "192.168.5.9", 24, "")


@pytest.mark.parametrize("addrs", [[LO], [LO, _link("eth0", "aa:00:00:00:00:01", None)], []])
def test_a_netns_with_loopback_only_has_nothing_to_bridge(addrs: list[dict]) -> None:
    assert find_interface(json.dumps(addrs) + "\n[]\n") is None


@pytest.mark.parametrize("text", ["not json", "[]", '[]\n{"a": 1}', "[1]\n[]"])
def test_output_that_is_not_two_ip_json_lists_is_an_error(text: str) -> None:
    with pytest.raises(InvalidArgument, match="cannot read the network namespace's"):
        find_interface(text)


def test_tap_names_fit_an_ifname_and_differ_per_container() -> None:
    a, b = tap_name("a" * 64), tap_name("b" * 64)
    assert a != b and len(a) <= 15 and a.startswith("scn")


def test_the_tc_batches_mirror_both_ways_and_removal_drops_the_interfaces_qdisc() -> None:
    wiring = NetnsWiring("/run/netns/p", "scn0123", NetnsInterface(
        "eth0", "aa:00:00:00:00:01", 1400, "10.88.0.5", 16, "10.88.0.1"))
    assert netns_link_batch(wiring) == "link set dev scn0123 mtu 1400 up\n"
    assert tc_wire_batch(wiring).splitlines() == [
        "qdisc add dev eth0 ingress",
        "qdisc add dev scn0123 ingress",
        "filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 "
        "action mirred egress redirect dev scn0123",
        "filter add dev scn0123 parent ffff: protocol all u32 match u32 0 0 "
        "action mirred egress redirect dev eth0",
    ]
    assert tc_unwire_batch(wiring) == "qdisc del dev eth0 ingress\n"


def test_the_read_batch_asks_for_interfaces_then_routes() -> None:
    assert READ_BATCH.splitlines() == ["addr show", "route show"]
