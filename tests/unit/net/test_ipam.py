"""IPAM: subnet choice avoiding host routes and other networks, address allocation."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from steelcup.errors import Conflict, InvalidArgument
from steelcup.net import ipam

POOL = IPv4Network("10.213.0.0/16")


def test_first_free_subnet_skips_taken_and_host_routes() -> None:
    taken = [IPv4Network("10.213.0.0/24")]
    routes = [IPv4Network("10.213.1.0/25"), IPv4Network("192.168.1.0/24")]
    plan = ipam.choose_subnet(POOL, 24, taken, routes)
    assert plan.subnet == IPv4Network("10.213.2.0/24")
    assert plan.gateway == IPv4Address("10.213.2.1")


def test_pool_exhausted_and_route_covering_pool() -> None:
    with pytest.raises(Conflict):
        ipam.choose_subnet(IPv4Network("10.213.0.0/23"), 24, [],
                           [IPv4Network("10.0.0.0/8")])
    with pytest.raises(InvalidArgument):
        ipam.choose_subnet(POOL, 8, [])


def test_parse_routes_from_ip_route_output() -> None:
    text = (
        "default via 172.16.0.1 dev eth0 proto dhcp\n"
        "172.16.0.0/20 dev eth0 proto kernel scope link src 172.16.0.5\n"
        "local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1\n"
        "local 172.16.0.5 dev eth0 table local proto kernel scope host src 172.16.0.5\n"
        "broadcast 172.16.15.255 dev eth0 table local proto kernel scope link\n"
    )
    routes = ipam.parse_routes(text)
    assert IPv4Network("172.16.0.0/20") in routes
    assert IPv4Network("172.16.0.5/32") in routes
    assert all(not r.is_loopback for r in routes)


def test_user_subnet_overlap_and_gateway_checks() -> None:
    sub = ipam.parse_subnet("10.50.0.0/24")
    with pytest.raises(Conflict):
        ipam.check_subnet(sub, None, [IPv4Network("10.50.0.0/16")])
    with pytest.raises(InvalidArgument):
        ipam.check_subnet(sub, IPv4Address("10.51.0.1"), [])
    with pytest.raises(InvalidArgument):
        ipam.check_subnet(sub, IPv4Address("10.50.0.255"), [])
    assert ipam.check_subnet(sub, IPv4Address("10.50.0.254"), []).gateway == IPv4Address(
        "10.50.0.254")
    for bad in ("10.50.0.1/24", "fd00::/64", "nonsense", "10.0.0.0/31"):
        with pytest.raises(InvalidArgument):
            ipam.parse_subnet(bad)


def test_allocation_lowest_free_never_gateway_and_wanted() -> None:
    plan = ipam.SubnetPlan(IPv4Network("10.213.0.0/29"), IPv4Address("10.213.0.1"))
    used: list[IPv4Address] = []
    for _ in range(5):
        used.append(ipam.allocate_address(plan, used))
    assert [str(a) for a in used] == [f"10.213.0.{i}" for i in range(2, 7)]
    with pytest.raises(Conflict):
        ipam.allocate_address(plan, used)
    # a freed address is reused; a wanted one must be free and a host address
    used.remove(IPv4Address("10.213.0.3"))
    assert ipam.allocate_address(plan, used) == IPv4Address("10.213.0.3")
    with pytest.raises(Conflict):
        ipam.allocate_address(plan, used, IPv4Address("10.213.0.2"))
    with pytest.raises(InvalidArgument):
        ipam.allocate_address(plan, used, IPv4Address("10.213.0.7"))
    with pytest.raises(Conflict):
        ipam.allocate_address(plan, used, IPv4Address("10.213.0.1"))


def test_mac_from_address() -> None:
    assert ipam.mac_for(IPv4Address("10.213.0.2")) == "02:42:0a:d5:00:02"
