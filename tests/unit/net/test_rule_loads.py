"""What the network manager loads into the kernel, and when, as containers come and go: a new
endpoint's anti-spoofing guard is added to the loaded sets rather than the ruleset reloaded
(each reload waits for RCU grace periods), and a gone VM's taps are deleted in the background,
with a restart of the same container waiting for them. Without a kernel (tests/unit/net/
test_vips.py's DryHost): the texts `nft.apply` is given and the order of the deletions."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from steelcup.net import links, nft
from steelcup.net.links import Host
from steelcup.net.manager import NetworkManager
from steelcup.net.model import NetworkRecord, PortMapping
from steelcup.net.store import NetStore
from steelcup.state.db import open_db
from tests.unit.net.test_vips import ALICE, DryHost, _manager


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(nft, "apply", lambda host, text: seen.append(text))
    return seen


async def _start(mgr: NetworkManager, cid: str) -> str:
    """The container (on appnet, no ports) runs; its tap."""
    att = await mgr.attach(cid * 64, f"c{cid}", "appnet", tenant="alice")
    return att.nics[0].tap


def test_a_new_container_adds_its_guard_and_a_restart_loads_nothing(
        tmp_path: Path, loads: list[str]) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        try:
            first = await _start(mgr, "a")
            assert len(loads) == 1 and "delete table bridge steelcup_guard" in loads[0]
            await mgr.detach("a" * 64)
            second = await _start(mgr, "b")
            assert len(loads) == 2
            assert loads[1].startswith("add element bridge steelcup_guard macs")
            assert second in loads[1] and first not in loads[1]
            assert "table" not in loads[1].replace("add element bridge steelcup_guard", "")
            await mgr.detach("b" * 64)
            await _start(mgr, "b")  # its guard is loaded: nothing to do
            assert len(loads) == 2
        finally:
            await mgr.close()

    asyncio.run(scenario())


def test_a_removed_containers_guard_goes_with_the_next_full_load(
        tmp_path: Path, loads: list[str]) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        try:
            gone = await _start(mgr, "a")
            await mgr.release("a" * 64)
            await _start(mgr, "b")
            assert gone not in loads[-1]  # an addition only: its guard stays meanwhile
            await mgr.release("b" * 64)
            # a published port that goes away makes the next load whole, and current
            await mgr.attach("c" * 64, "cc", "appnet", tenant="alice",
                             ports=[PortMapping(80, "tcp", host_port=18080)])
            await mgr.detach("c" * 64)
            assert "delete table bridge steelcup_guard" in loads[-1]
            assert gone not in loads[-1]
        finally:
            await mgr.close()

    asyncio.run(scenario())


def test_a_running_container_disconnected_by_force_loses_its_guard_at_the_next_load(
        tmp_path: Path, loads: list[str]) -> None:
    """Its address is free for the next container; its VM, still running, must not keep the
    right to send as it."""
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        try:
            running = await _start(mgr, "a")
            mgr.disconnect(ALICE, "a" * 64, force=True)
            await mgr.reload_rules()  # as the API's disconnect does
            assert "delete table bridge steelcup_guard" in loads[-1]
            assert running not in loads[-1]
        finally:
            await mgr.close()

    asyncio.run(scenario())


def test_taps_are_deleted_in_the_background_and_a_restart_waits(
        tmp_path: Path, loads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    release = threading.Event()

    def slow_delete(host: Host, name: str) -> None:
        release.wait(5)
        time.sleep(0.05)
        events.append(f"deleted {name}")

    monkeypatch.setattr(links, "delete_link", slow_delete)

    async def scenario() -> None:
        mgr = _manager(tmp_path)
        try:
            tap = await _start(mgr, "a")
            await mgr.detach("a" * 64)
            events.append("detached")  # before the deletion: it waits for `release`
            restart = asyncio.create_task(_start(mgr, "a"))
            await asyncio.sleep(0.1)
            assert not restart.done()  # its tap's name is still taken
            release.set()
            assert await restart == tap
            events.append("restarted")
            assert events == ["detached", f"deleted {tap}", "restarted"]
            await mgr.detach("a" * 64)
        finally:
            await mgr.close()
        assert events[-1] == f"deleted {tap}"  # close waits for the deletions under way

    asyncio.run(scenario())


def test_a_published_port_is_added_and_its_removal_reloads(tmp_path: Path,
                                                           loads: list[str]) -> None:
    """A port's DNAT rule is added to the loaded `ports` chain; taking one away (a rule's
    deletion waits for RCU anyway) loads the whole ruleset, without it."""
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        try:
            await _start(mgr, "a")
            await mgr.attach("b" * 64, "web", "appnet", tenant="alice",
                             ports=[PortMapping(80, "tcp", host_port=18081)])
            assert loads[-1].startswith("add element")  # b's guard, then its port
            assert "add rule inet steelcup ports tcp dport 18081 dnat ip to 10.213.1." in loads[-1]
            assert "table" not in loads[-1].replace("bridge steelcup_guard", "").replace(
                "inet steelcup ports", "")
            await mgr.detach("b" * 64)
            assert "delete table inet steelcup" in loads[-1]
            assert "dport 18081" not in loads[-1]
            await mgr.attach("b" * 64, "web", "appnet", tenant="alice",
                             ports=[PortMapping(80, "tcp", host_port=18081)])
            assert loads[-1].startswith("add rule inet steelcup ports tcp dport 18081")
        finally:
            await mgr.close()

    asyncio.run(scenario())


def test_a_removed_containers_floating_ip_reads_detached_once_its_nat_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Removal detaches the container's FIP in its record first (the ruleset is rendered from
    the records), then loads the rules: a reader that waits for `settled` (fip ls/inspect) sees
    it detached only once the DNAT to the old address is gone, as for `fip detach`."""
    gate, loading = threading.Event(), threading.Event()
    hold = False
    loaded: list[str] = []

    def apply(host: Host, text: str) -> None:
        if hold:
            loading.set()
            gate.wait(10)
        loaded.append(text)

    monkeypatch.setattr(nft, "apply", apply)

    async def scenario() -> None:
        nonlocal hold
        store = NetStore(open_db(tmp_path))
        store.insert_network(NetworkRecord(ALICE, "appnet", "10.213.1.0/24", "10.213.1.1",
                                           "sc-aaaaaaaaaaaa", tenant="alice"))
        mgr = NetworkManager(store, DryHost(), upstreams=[], host_routes=lambda: [],
                             dns_port=0, fip_pool="203.0.113.16/28", fip_interface="scfip0")
        try:
            cid = "a" * 64
            await mgr.attach(cid, "ca", "appnet", tenant="alice")
            address = (await mgr.fips.allocate("alice"))[0].address
            await mgr.fips.attach(address, cid, "alice")
            assert address in loaded[-1]
            await mgr.detach(cid)
            hold = True
            release = asyncio.create_task(mgr.release(cid))
            assert await asyncio.to_thread(loading.wait, 10)  # its rules are being loaded
            assert not mgr.fips.get(address, "alice").attached  # the record is saved

            async def reader() -> bool:
                await mgr.fips.settled()
                return mgr.fips.get(address, "alice").attached

            read = asyncio.create_task(reader())
            await asyncio.sleep(0.05)
            assert not read.done()  # the old DNAT is still loaded
            gate.set()
            await release
            assert await read is False
            assert address not in loaded[-1]
        finally:
            gate.set()
            await mgr.close()

    asyncio.run(scenario())
