"""Virtual IPs in the manager, without a kernel: addresses shared with the containers' (IPAM),
names and their checks, backends, DNS answers, tenants, published ports, persistence.

The host's commands (`ip`, `nft`, `sysctl`) are `true` here: tests/vm/test_net_vip.py runs the
same calls against a real kernel and real VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.net.links import Host
from steelcup.net.manager import NetworkManager
from steelcup.net.model import NetworkRecord, PortMapping
from steelcup.net.store import NetStore
from steelcup.state.db import open_db
from tests.unit.net.dry import DryRtnl

ALICE = "a" * 64
BOB = "b" * 64


@dataclass(frozen=True)
class DryHost(Host):
    """Every command of the network layer is `true`, every ruleset load and rtnetlink request
    nothing: the bookkeeping without a kernel."""

    def ip(self, *args: str) -> list[str]:
        return ["true"]

    def nft(self, *args: str) -> list[str]:
        return ["true"]

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["true"]

    def load_nft(self, ruleset: str) -> None:
        return None

    def rtnl(self) -> contextlib.AbstractContextManager[DryRtnl]:  # type: ignore[override]
        return contextlib.nullcontext(DryRtnl())


def _manager(tmp_path: Path) -> NetworkManager:
    store = NetStore(open_db(tmp_path))
    if not store.networks():
        store.insert_network(NetworkRecord(ALICE, "appnet", "10.213.1.0/24", "10.213.1.1",
                                           "sc-aaaaaaaaaaaa", tenant="alice"))
        store.insert_network(NetworkRecord(BOB, "appnet", "10.213.2.0/24", "10.213.2.1",
                                           "sc-bbbbbbbbbbbb", tenant="bob"))
    # dns_port 0: the resolvers are not reachable here anyway (no bridge address)
    return NetworkManager(store, DryHost(), upstreams=[], host_routes=lambda: [], dns_port=0)


async def _run(mgr: NetworkManager, cid: str, name: str, tenant: str = "alice") -> str:
    """A running container on appnet; its address."""
    att = await mgr.attach(cid * 64, name, "appnet", tenant=tenant)
    return att.nics[0].address


def test_vip_and_container_addresses_never_collide(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        web = await mgr.reserve_vip("appnet", "web", "alice")
        assert (web.address, web.network_id, web.tenant) == ("10.213.1.2", ALICE, "alice")
        ep = mgr.connect("appnet", "c" * 64, "c1", tenant="alice")
        assert ep.address == "10.213.1.3"  # the VIP's address is taken
        with pytest.raises(Conflict, match="already in use"):
            mgr.connect("appnet", "d" * 64, "c2", address="10.213.1.2", tenant="alice")
        with pytest.raises(Conflict, match="already in use"):
            await mgr.reserve_vip("appnet", "api", "alice", address="10.213.1.3")
        api = await mgr.reserve_vip("appnet", "api", "alice", address="10.213.1.50")
        assert api.address == "10.213.1.50"
        with pytest.raises(InvalidArgument, match="not a host address"):
            await mgr.reserve_vip("appnet", "x", "alice", address="10.213.9.9")
        await mgr.release_vip(web.id)
        assert mgr.connect("appnet", "e" * 64, "c3", tenant="alice").address == "10.213.1.2"
        assert [v.name for v in mgr.vips()] == ["api"]
    asyncio.run(scenario())


def test_names_are_checked_and_unique_per_network(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        await mgr.reserve_vip("appnet", "web", "alice")
        with pytest.raises(Conflict, match="named web"):
            await mgr.reserve_vip("appnet", "web", "alice")
        await mgr.reserve_vip("appnet", "web", "bob")  # another tenant's network: fine
        for bad in ("tasks.web", "", "-x", "a b", "x" * 64, "web;drop"):
            with pytest.raises(InvalidArgument):
                await mgr.reserve_vip("appnet", bad, "alice")
        with pytest.raises(InvalidArgument):
            await mgr.reserve_vip("appnet", "ok", "alice", aliases=["TASKS.x"])
        assert sorted(v.name for v in mgr.vips(tenant="alice")) == ["web"]
        # a failed reservation holds no address
        assert mgr.connect("appnet", "c" * 64, "c1", tenant="alice").address == "10.213.1.3"
    asyncio.run(scenario())


def test_a_tenant_reaches_only_its_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        web = await mgr.reserve_vip("appnet", "web", "alice")
        with pytest.raises(NotFound):
            await mgr.reserve_vip(ALICE, "x", "bob")  # alice's network by id
        with pytest.raises(NotFound):
            mgr.get_vip(web.id, tenant="bob")
        assert mgr.get_vip(web.id, tenant="alice") == web
        assert mgr.vips(tenant="bob") == []
        # a backend must be a container of the VIP's network: not bob's
        bob_ip = await _run(mgr, "b", "bobweb", tenant="bob")
        with pytest.raises(InvalidArgument, match="not the address of a container on network"):
            await mgr.set_backends(web.id, [bob_ip])
        with pytest.raises(InvalidArgument):
            await mgr.set_backends(web.id, ["not-an-address"])
    asyncio.run(scenario())


def test_dns_names_the_vip_and_its_live_backends(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        web = await mgr.reserve_vip("appnet", "web", "alice", aliases=["www"])
        one = await _run(mgr, "1", "web.1")
        two = await _run(mgr, "2", "web.2")
        stopped = mgr.connect("appnet", "3" * 64, "web.3", tenant="alice").address
        assert mgr._resolve(ALICE, "tasks.web") == []  # known, no backend yet: not upstream
        web = await mgr.set_backends(web.id, [two, one, stopped, one])
        assert web.backends == tuple(sorted({one, two, stopped}, key=IPv4Address))
        for name in ("web", "WEB.", "www"):
            assert mgr._resolve(ALICE, name) == [IPv4Address(web.address)]
        assert mgr._resolve(ALICE, "tasks.web") == [IPv4Address(one), IPv4Address(two)]
        assert mgr._resolve(ALICE, "tasks.www") == [IPv4Address(one), IPv4Address(two)]
        assert mgr._resolve(BOB, "web") is None and mgr._resolve(BOB, "tasks.web") is None
        # a stopped backend drops out, a removed one leaves the record (its address may be
        # handed to another container next)
        await mgr.detach("2" * 64)
        assert mgr._resolve(ALICE, "tasks.web") == [IPv4Address(one)]
        await mgr.release("1" * 64)
        assert mgr._resolve(ALICE, "tasks.web") == []
        assert mgr.get_vip(web.id).backends == tuple(sorted({two, stopped}, key=IPv4Address))
    asyncio.run(scenario())


def test_published_ports_are_checked_and_replaced(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        web = await mgr.reserve_vip("appnet", "web", "alice")
        api = await mgr.reserve_vip("appnet", "api", "alice")
        try:
            web = await mgr.publish_vip(web.id, [PortMapping(80), PortMapping(53, "udp")])
            tcp, udp = web.ports
            assert tcp.host_port > 0 and udp.host_port > 0 and udp.proto == "udp"
            with pytest.raises(Conflict, match="already allocated"):
                await mgr.publish_vip(api.id, [PortMapping(80, "tcp", "", tcp.host_port)])
            with pytest.raises(Conflict, match="already allocated"):
                await mgr.attach("c" * 64, "c", "appnet", tenant="alice",
                                 ports=[PortMapping(80, "tcp", "", tcp.host_port)])
            with pytest.raises(InvalidArgument):
                await mgr.publish_vip(api.id, [PortMapping(80, "sctp")])
            with pytest.raises(InvalidArgument):
                await mgr.publish_vip(api.id, [PortMapping(0)])
            # replacing its own ports with the same host port is no conflict
            web = await mgr.publish_vip(web.id, [PortMapping(8080, "tcp", "", tcp.host_port)])
            assert web.ports == (PortMapping(8080, "tcp", "", tcp.host_port),)
            assert mgr.get_vip(web.id).ports == web.ports
        finally:
            await mgr.close()
    asyncio.run(scenario())


def test_vips_survive_a_restart_and_hold_their_network(tmp_path: Path) -> None:
    async def first() -> str:
        mgr = _manager(tmp_path)
        web = await mgr.reserve_vip("appnet", "web", "alice")
        ip = await _run(mgr, "1", "web.1")
        await mgr.set_backends(web.id, [ip])
        await mgr.publish_vip(web.id, [PortMapping(80)])
        await mgr.close()
        return web.id

    async def second(vip_id: str) -> None:
        mgr = _manager(tmp_path)
        await mgr.startup()
        try:
            web = mgr.get_vip(vip_id)
            assert (web.name, web.address, len(web.backends), len(web.ports)) == (
                "web", "10.213.1.2", 1, 1)
            await mgr.release("1" * 64)  # its container is gone: the network holds the VIP
            with pytest.raises(Conflict, match="virtual IPs of services"):
                await mgr.remove(ALICE)
            with pytest.raises(Conflict, match="virtual IPs of services"):
                await mgr.remove_tenant("alice")
            assert "appnet" not in await mgr.prune("alice")
            await mgr.release_vip(vip_id)
            with pytest.raises(NotFound):
                await mgr.release_vip(vip_id)
        finally:
            await mgr.close()

    asyncio.run(second(asyncio.run(first())))


def test_dnsrr_holds_no_address_and_its_name_answers_the_backends(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        db = await mgr.reserve_vip("appnet", "db", "alice", mode="dnsrr")
        other = await mgr.reserve_vip("appnet", "cache", "alice", mode="dnsrr")
        assert db.address == other.address == "" and db.mode == "dnsrr"
        one = await _run(mgr, "1", "db.1")
        assert one == "10.213.1.2"  # no address was taken
        await mgr.set_backends(db.id, [one])
        assert mgr._resolve(ALICE, "db") == [IPv4Address(one)]
        assert mgr._resolve(ALICE, "tasks.db") == [IPv4Address(one)]
        assert mgr._resolve(ALICE, "cache") == []
        with pytest.raises(InvalidArgument, match="dnsrr"):
            await mgr.publish_vip(db.id, [PortMapping(80)])
        with pytest.raises(InvalidArgument, match="dnsrr"):
            await mgr.reserve_vip("appnet", "x", "alice", mode="dnsrr", address="10.213.1.9")
        with pytest.raises(InvalidArgument, match="endpoint mode"):
            await mgr.reserve_vip("appnet", "x", "alice", mode="ingress")
        with pytest.raises(Conflict, match="named db"):
            await mgr.reserve_vip("appnet", "db", "alice")
        await mgr.release_vip(db.id)
        assert mgr._resolve(ALICE, "db") is None
    asyncio.run(scenario())


def test_a_suspended_containers_held_ports_are_its_own(tmp_path: Path) -> None:
    from steelcup.net.nft import PublishedPort

    async def scenario() -> None:
        mgr = _manager(tmp_path)
        sleeper, other = "1" * 64, "2" * 64
        mgr.hold_ports(sleeper, [PublishedPort("10.9.9.9", 18400, "10.213.1.9", 80)])
        wanted = [PortMapping(80, "tcp", "10.9.9.9", 18400)]
        with pytest.raises(Conflict, match="already allocated"):
            await mgr.attach(other, "other", "appnet", tenant="alice", ports=wanted)
        web = await mgr.reserve_vip("appnet", "web", "alice")
        with pytest.raises(Conflict, match="already allocated"):
            await mgr.publish_vip(web.id, [PortMapping(80, "tcp", "", 18400)])
        # Its own resume publishes them again.
        att = await mgr.attach(sleeper, "sleeper", "appnet", tenant="alice", ports=wanted)
        assert [p.host_port for p in att.ports] == [18400]
        await mgr.detach(sleeper)
        mgr.drop_held_ports(sleeper)
        att = await mgr.attach(other, "other", "appnet", tenant="alice", ports=wanted)
        assert [p.host_port for p in att.ports] == [18400]
        await mgr.detach(other)
    asyncio.run(scenario())
