"""Networks per tenant in the store and the manager: an older table migrates (existing networks
are the operator's, endpoints keep their network), names are unique per tenant, a tenant's
lookup sees only its own networks, the operator's sees all, and each tenant's `bridge` is its
own, made on first use with a subnet and bridge no other network has."""

from __future__ import annotations

import asyncio
import sqlite3
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.net.manager import DEFAULT_BRIDGE, NetworkManager, _Live
from steelcup.net.model import Endpoint, NetworkRecord
from steelcup.net.store import NetStore
from steelcup.state.db import open_db


def _net(net_id: str, name: str, third: int, tenant: str = "") -> NetworkRecord:
    return NetworkRecord(net_id * 64, name, f"10.213.{third}.0/24", f"10.213.{third}.1",
                         f"sc-{net_id * 12}", tenant=tenant)


def test_an_older_table_migrates_with_its_endpoints(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    old = _net("a", "web", 5)
    with db:  # the table as daemons before tenancy made it
        db.execute("CREATE TABLE networks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                   " data TEXT NOT NULL)")
        db.execute("CREATE TABLE net_endpoints (network_id TEXT NOT NULL REFERENCES"
                   " networks(id), container_id TEXT NOT NULL, address TEXT NOT NULL,"
                   " data TEXT NOT NULL, PRIMARY KEY (network_id, container_id),"
                   " UNIQUE (network_id, address))")
        legacy = old.to_json().replace(', "tenant": ""', "")
        assert "tenant" not in legacy
        db.execute("INSERT INTO networks VALUES (?, ?, ?)", (old.id, old.name, legacy))
    store = NetStore(db)
    ep = Endpoint(old.id, "c" * 64, "c", "10.213.5.2", "02:42:0a:d5:05:02")
    store.insert_endpoint(ep)
    reopened = NetStore(open_db(tmp_path))
    assert reopened.networks() == [old] and reopened.networks("") == [old]
    assert reopened.endpoints(old.id) == [ep]
    # the foreign key still holds: an endpoint of no network is refused
    with pytest.raises(sqlite3.IntegrityError):
        with db:
            db.execute("INSERT INTO net_endpoints VALUES ('nope', 'c', '10.0.0.2', '{}')")
    # and names are now unique per tenant only
    reopened.insert_network(_net("b", "web", 6, tenant="alice"))
    with pytest.raises(Conflict, match="network with name web already exists"):
        reopened.insert_network(_net("c", "web", 7, tenant="alice"))
    assert [n.name for n in reopened.networks("alice")] == ["web"]


@pytest.fixture
def manager(tmp_path: Path) -> NetworkManager:
    store = NetStore(open_db(tmp_path))
    store.insert_network(_net("0", "bridge", 0))
    store.insert_network(_net("a", "appnet", 1, tenant="alice"))
    store.insert_network(_net("b", "appnet", 2, tenant="bob"))
    return NetworkManager(store, upstreams=[], host_routes=lambda: [IPv4Network("10.213.3.0/24")])


def test_a_tenant_sees_only_its_own(manager: NetworkManager) -> None:
    for ref in ("a" * 64, "a" * 12, "appnet"):
        assert manager.resolve(ref, "alice").id == "a" * 64
    for ref in ("b" * 64, "b" * 12, "0" * 64):
        with pytest.raises(NotFound, match=f"^network {ref} not found$"):
            manager.resolve(ref, "alice")
    assert [n.name for n in manager.networks("alice")] == ["appnet"]
    with pytest.raises(NotFound):
        manager.resolve("appnet", "carol")
    # the operator's own containers ("") are a tenant like any other here
    with pytest.raises(NotFound):
        manager.resolve("appnet", "")


def test_the_operator_sees_all_and_a_shared_name_is_ambiguous(manager: NetworkManager) -> None:
    assert manager.get("b" * 12).tenant == "bob"
    with pytest.raises(InvalidArgument, match="2 networks of different tenants"):
        manager.get("appnet")
    assert manager.get("bridge").id == "0" * 64  # the operator's own comes first


def test_each_tenants_bridge_is_its_own_and_made_once(manager: NetworkManager) -> None:
    alice = manager.resolve("bridge", "alice")
    bob = manager.resolve("bridge", "bob")
    assert (alice.tenant, bob.tenant) == ("alice", "bob")
    assert manager.resolve("bridge", "alice") == alice  # made on first use only
    subnets = [IPv4Network(n.subnet) for n in manager.networks()]
    assert len(set(subnets)) == len(subnets) == 5
    assert IPv4Network("10.213.3.0/24") not in subnets  # a host route is avoided
    bridges = [n.bridge for n in manager.networks()]
    assert len(set(bridges)) == 5 and DEFAULT_BRIDGE not in (alice.bridge, bob.bridge)
    assert manager.get("bridge").id == "0" * 64


def test_connect_looks_only_among_the_containers_tenants_networks(
        manager: NetworkManager) -> None:
    with pytest.raises(NotFound):
        manager.connect("b" * 64, "c" * 64, "web", tenant="alice")
    ep = manager.connect("appnet", "c" * 64, "web", tenant="alice")
    assert ep.network_id == "a" * 64


def test_a_tenant_cannot_name_its_bridge_or_step_on_the_hosts_routes(
        manager: NetworkManager) -> None:
    with pytest.raises(InvalidArgument, match="operator's to set"):
        asyncio.run(manager.create("n", options={"com.docker.network.bridge.name": "eth0"},
                                   tenant="alice"))
    with pytest.raises(Conflict, match="overlaps a network the host reaches"):
        asyncio.run(manager.create("n", subnet="10.213.3.0/25", tenant="alice"))
    with pytest.raises(Conflict, match="bridge sc-aaaaaaaaaaaa is taken"):
        asyncio.run(manager.create("n", options={"com.docker.network.bridge.name":
                                                 "sc-" + "a" * 12}))
    assert [n.name for n in manager.networks("alice")] == ["appnet"]


def test_a_link_alias_is_answered_to_the_linking_container_alone(
        manager: NetworkManager) -> None:
    """docker-compose's `links:` on a user network: the alias resolves to the target for the
    container that linked, for nobody else; names and aliases resolve for everyone."""
    net = "a" * 64
    db = manager.connect(net, "d" * 64, "proj_db_1", ("db",), tenant="alice")
    web = manager.connect(net, "e" * 64, "proj_web_1", tenant="alice",
                          links=manager.link_targets(net, "alice", [("proj_db_1", "db_1")],
                                                     lambda ref: ("d" * 64, ref)))
    other = manager.connect(net, "f" * 64, "other", tenant="alice")
    for cid in ("d" * 64, "e" * 64, "f" * 64):
        manager._live[cid] = _Live()  # running: only running containers are answered
    assert manager._resolve(net, "db_1", web.address) == [IPv4Address(db.address)]
    assert manager._resolve(net, "db_1", other.address) is None
    assert manager._resolve(net, "db", other.address) == [IPv4Address(db.address)]
    assert manager.store.endpoints(net)[1].links == (("d" * 64, "db_1"),)  # kept in the store
    with pytest.raises(InvalidArgument, match="cannot link to x: it is not on network appnet"):
        manager.link_targets(net, "alice", [("x", "x")], lambda ref: ("9" * 64, ref))
