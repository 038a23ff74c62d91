"""Networks and endpoints survive a reopen of the database; an address is never handed out
twice, even to a second daemon run."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from steelcup.errors import Conflict
from steelcup.net import ipam
from steelcup.net.model import Endpoint, NetworkRecord
from steelcup.net.store import NetStore
from steelcup.state.db import open_db


def _net() -> NetworkRecord:
    return NetworkRecord("n" * 64, "web", "10.213.5.0/24", "10.213.5.1", "sc-nnnnnnnnnnnn",
                         labels={"a": "b"})


def test_reopen_keeps_allocations(tmp_path: Path) -> None:
    store = NetStore(open_db(tmp_path))
    store.insert_network(_net())
    plan = ipam.SubnetPlan(IPv4Network("10.213.5.0/24"), IPv4Address("10.213.5.1"))
    for cid in ("c1", "c2"):
        used = [IPv4Address(e.address) for e in store.endpoints("n" * 64)]
        addr = ipam.allocate_address(plan, used)
        store.insert_endpoint(Endpoint("n" * 64, cid, cid, str(addr), ipam.mac_for(addr),
                                       ("alias",)))
    reopened = NetStore(open_db(tmp_path))  # a restarted daemon
    assert reopened.networks() == [_net()]
    eps = reopened.endpoints("n" * 64)
    assert [e.address for e in eps] == ["10.213.5.2", "10.213.5.3"]
    assert eps[0].aliases == ("alias",)
    used = [IPv4Address(e.address) for e in eps]
    assert ipam.allocate_address(plan, used) == IPv4Address("10.213.5.4")
    # the database itself refuses a duplicate address
    with pytest.raises(Conflict):
        reopened.insert_endpoint(Endpoint("n" * 64, "c3", "c3", "10.213.5.2", "x"))
    with pytest.raises(Conflict):
        reopened.insert_network(_net())
    reopened.delete_network("n" * 64)
    assert reopened.networks() == [] and reopened.endpoints() == []


def test_endpoints_are_decoded_once_and_always_current(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ruleset load lists every endpoint: a row's text is decoded once, and a listing
    shows what the table holds now (a changed row decoded anew, a deleted one gone)."""
    decoded: list[str] = []
    real = Endpoint.from_json

    def counting(text: str) -> Endpoint:
        decoded.append(text)
        return real(text)

    monkeypatch.setattr(Endpoint, "from_json", staticmethod(counting))
    store = NetStore(open_db(tmp_path))
    store.insert_network(_net())
    a = Endpoint("n" * 64, "a" * 64, "a", "10.213.5.2", "02:42:0a:d5:05:02")
    b = Endpoint("n" * 64, "b" * 64, "b", "10.213.5.3", "02:42:0a:d5:05:03")
    store.insert_endpoint(a)
    store.insert_endpoint(b)
    assert store.endpoints() == [a, b] and len(decoded) == 2
    assert store.endpoints() == [a, b] and len(decoded) == 2  # decoded before
    renamed = Endpoint("n" * 64, "a" * 64, "a2", "10.213.5.2", "02:42:0a:d5:05:02")
    store.delete_endpoint("n" * 64, "a" * 64)
    store.insert_endpoint(renamed)
    assert store.endpoints() == [b, renamed] and len(decoded) == 3
    store.delete_endpoint("n" * 64, "b" * 64)
    assert store.endpoints() == [renamed] and store.endpoints("n" * 64) == [renamed]
    assert len(decoded) == 3
